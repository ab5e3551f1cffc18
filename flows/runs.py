"""Run state transitions for the worker and the reaper, each one a conditional UPDATE.

A worker owns a run through a lease: a random owner token and an expiry. Every write a worker
makes names its token (fencing), so once the lease has been taken over, released or cleared by
a cancel, the old owner's writes change nothing and raise `LeaseLostError`. Every fenced write
also extends the lease, so a worker that keeps writing keeps its run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert

from flows.db import outbox, run_steps, runs
from flows.models import OPEN_STATUSES, RunStatus

RUNNING = RunStatus.RUNNING.value
QUEUED = RunStatus.QUEUED.value


class LeaseLostError(Exception):
    """The run is no longer leased to this worker: taken over, released or cancelled."""

    def __init__(self, run_id: uuid.UUID, status: str | None) -> None:
        super().__init__(f"run {run_id} is no longer leased to this worker (status {status})")
        self.run_id = run_id
        self.status = status


@dataclass
class Lease:
    """A claimed run: what the worker needs to execute it and to fence its writes."""

    run_id: uuid.UUID
    owner: str
    flow_id: uuid.UUID
    attempt: int
    flow_snapshot: dict[str, Any]
    input: dict[str, Any]
    queued_at: datetime
    claimed_at: datetime
    lease_seconds: float
    # Results already stored for this run's steps, by step id (a resumed run skips these).
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimRefused:
    """Why a run could not be claimed; `retry_after` is set while another lease is live."""

    reason: str
    status: str | None
    retry_after: float | None = None


def new_owner() -> str:
    """A random lease owner token."""
    return uuid.uuid4().hex


# The statements of a run's hot path are built once, with bound parameters: building a
# statement (and its cache key) costs more CPU than running it.
_RUN = sa.bindparam("run", type_=UUID(as_uuid=True))
_OWNER = sa.bindparam("owner", type_=sa.Text)
_LEASE_EXPIRY = sa.func.now() + sa.func.make_interval(
    0, 0, 0, 0, 0, 0, sa.bindparam("lease_seconds", type_=sa.Float))
_NULLABLE_JSON = JSONB(none_as_null=True)
_HELD = (runs.c.id == _RUN, runs.c.lease_owner == _OWNER, runs.c.status == RUNNING)
_TAKEOVER = runs.c.status == RUNNING

_CLAIM = (
    sa.update(runs)
    .where(runs.c.id == _RUN,
           sa.or_(runs.c.status == QUEUED,
                  sa.and_(_TAKEOVER, runs.c.lease_expires_at < sa.func.now())))
    .values(status=RUNNING, lease_owner=_OWNER, lease_expires_at=_LEASE_EXPIRY,
            attempt=sa.case((_TAKEOVER, runs.c.attempt + 1), else_=runs.c.attempt),
            started_at=sa.func.coalesce(runs.c.started_at, sa.func.now()),
            updated_at=sa.func.now())
    .returning(runs.c.flow_id, runs.c.attempt, runs.c.flow_snapshot, runs.c.input,
               runs.c.queued_at, runs.c.started_at, sa.func.now().label("claimed_at"))
)
_FENCE = (
    sa.update(runs).where(*_HELD)
    .values(lease_expires_at=_LEASE_EXPIRY, updated_at=sa.func.now())
    .returning(runs.c.id)
)
_START_STEP = (
    insert(run_steps)
    .values(run_id=_RUN, step_id=sa.bindparam("step"), position=sa.bindparam("position_"),
            status=RUNNING, attempts=1, started_at=sa.func.now())
    .on_conflict_do_update(
        index_elements=[run_steps.c.run_id, run_steps.c.step_id],
        set_={"status": RUNNING, "attempts": run_steps.c.attempts + 1,
              "started_at": sa.func.now(), "finished_at": None},
    )
    .returning(run_steps.c.attempts)
)
_FINISH_STEP = (
    sa.update(run_steps)
    .where(run_steps.c.run_id == _RUN, run_steps.c.step_id == sa.bindparam("step"))
    .values(status=sa.bindparam("step_status"),
            output=sa.bindparam("step_output", type_=_NULLABLE_JSON),
            error=sa.bindparam("step_error", type_=sa.Text), finished_at=sa.func.now())
)
_FINISH_RUN = (
    sa.update(runs).where(*_HELD)
    .values(status=sa.bindparam("run_status"),
            output=sa.bindparam("run_output", type_=_NULLABLE_JSON),
            error=sa.bindparam("run_error", type_=sa.Text), finished_at=sa.func.now(),
            updated_at=sa.func.now(), lease_owner=None, lease_expires_at=None)
    .returning(runs.c.id)
)


def claim(conn: sa.Connection, run_id: uuid.UUID, owner: str,
          lease_seconds: float) -> Lease | ClaimRefused:
    """Lease a queued run, or a running one whose lease expired (a new attempt)."""
    row = conn.execute(
        _CLAIM, {"run": run_id, "owner": owner, "lease_seconds": lease_seconds}
    ).one_or_none()
    if row is None:
        return _refusal(conn, run_id)
    lease = Lease(run_id=run_id, owner=owner, flow_id=row.flow_id, attempt=row.attempt,
                  flow_snapshot=row.flow_snapshot, input=row.input, queued_at=row.queued_at,
                  claimed_at=row.claimed_at, lease_seconds=lease_seconds)
    # now() is the transaction's start time: started_at equal to it means this claim started
    # the run, so there are no step results to load.
    if row.started_at != row.claimed_at:
        for step in conn.execute(sa.select(run_steps).where(run_steps.c.run_id == run_id)):
            lease.steps[step.step_id] = step._asdict()
    return lease


def _refusal(conn: sa.Connection, run_id: uuid.UUID) -> ClaimRefused:
    row = conn.execute(
        sa.select(runs.c.status,
                  sa.func.extract("epoch", runs.c.lease_expires_at - sa.func.now()))
        .where(runs.c.id == run_id)
    ).one_or_none()
    if row is None:
        return ClaimRefused("no such run", None)
    status, remaining = row
    if status == RUNNING:
        return ClaimRefused("leased by another worker", status, max(float(remaining or 0), 0))
    return ClaimRefused(f"already {status}", status)


def _fence(conn: sa.Connection, lease: Lease) -> None:
    """Extend the lease if this worker still holds it (locking the row), else raise."""
    held = conn.execute(_FENCE, {"run": lease.run_id, "owner": lease.owner,
                                 "lease_seconds": lease.lease_seconds}).one_or_none()
    if held is None:
        raise LeaseLostError(lease.run_id, current_status(conn, lease.run_id))


def current_status(conn: sa.Connection, run_id: uuid.UUID) -> str | None:
    return conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).scalar()


def heartbeat(conn: sa.Connection, lease: Lease) -> None:
    """Extend the lease; LeaseLostError once another worker or a cancel took the run."""
    _fence(conn, lease)


def start_step(conn: sa.Connection, lease: Lease, step_id: str, position: int, *,
               fence: bool = True) -> int:
    """Record a new attempt of a step as running; return the step's attempt count so far.

    `fence=False` only inside a transaction that has already fenced (or claimed) the run.
    """
    if fence:
        _fence(conn, lease)
    return conn.execute(
        _START_STEP, {"run": lease.run_id, "step": step_id, "position_": position}
    ).scalar_one()


def note_step_error(conn: sa.Connection, lease: Lease, step_id: str, error: str) -> None:
    """Keep the error of a failed attempt that will be retried (the step stays running)."""
    _fence(conn, lease)
    conn.execute(
        sa.update(run_steps)
        .where(run_steps.c.run_id == lease.run_id, run_steps.c.step_id == step_id)
        .values(error=error)
    )


def finish_step(conn: sa.Connection, lease: Lease, step_id: str, *, succeeded: bool,
                output: Any = None, error: str | None = None, fence: bool = True) -> None:
    """Store a step's final result (`fence=False`: as for `start_step`)."""
    if fence:
        _fence(conn, lease)
    conn.execute(_FINISH_STEP, {
        "run": lease.run_id, "step": step_id,
        "step_status": "succeeded" if succeeded else "failed",
        "step_output": output, "step_error": error,
    })


def finish_run(conn: sa.Connection, lease: Lease, status: RunStatus, *, output: Any = None,
               error: str | None = None) -> None:
    """End the run (succeeded or failed) and clear its lease; a cancelled run stays cancelled."""
    done = conn.execute(_FINISH_RUN, {
        "run": lease.run_id, "owner": lease.owner, "run_status": status.value,
        "run_output": output, "run_error": error,
    }).one_or_none()
    if done is None:
        raise LeaseLostError(lease.run_id, current_status(conn, lease.run_id))


def release(conn: sa.Connection, lease: Lease, *, send_message: bool) -> None:
    """Give the run back to the queue without counting an attempt (worker shutting down).

    With `send_message`, an outbox row is written in the same transaction, for a run whose
    queue message is gone (the pipe deleted it when it started this task).
    """
    released = conn.execute(
        sa.update(runs)
        .where(runs.c.id == lease.run_id, runs.c.lease_owner == lease.owner,
               runs.c.status == RUNNING)
        .values(status=QUEUED, lease_owner=None, lease_expires_at=None,
                enqueued_at=sa.func.now(), updated_at=sa.func.now())
        .returning(runs.c.id)
    ).one_or_none()
    if released is None:
        raise LeaseLostError(lease.run_id, current_status(conn, lease.run_id))
    if send_message:
        conn.execute(sa.insert(outbox).values(run_id=lease.run_id))


# --- reaper --------------------------------------------------------------------------------


def reap_expired_leases(conn: sa.Connection, *, max_attempts: int) -> tuple[list, list]:
    """Requeue runs whose lease expired (attempt + 1), or fail those out of attempts.

    Returns (requeued run ids, failed run ids). Requeued runs get an outbox row.
    """
    expired = sa.and_(runs.c.status == RUNNING, runs.c.lease_expires_at < sa.func.now())
    failed = conn.execute(
        sa.update(runs)
        .where(expired, runs.c.attempt >= max_attempts)
        .values(status=RunStatus.FAILED.value, finished_at=sa.func.now(),
                updated_at=sa.func.now(), lease_owner=None, lease_expires_at=None,
                error=sa.func.concat(
                    "lease expired: the worker stopped during attempt ", runs.c.attempt,
                    f" of {max_attempts}"))
        .returning(runs.c.id)
    ).scalars().all()
    requeued = conn.execute(
        sa.update(runs)
        .where(expired, runs.c.attempt < max_attempts)
        .values(status=QUEUED, attempt=runs.c.attempt + 1, lease_owner=None,
                lease_expires_at=None, updated_at=sa.func.now())
        .returning(runs.c.id)
    ).scalars().all()
    _add_to_outbox(conn, requeued)
    return list(requeued), list(failed)


def requeue_stale_queued(conn: sa.Connection, *, older_than_seconds: float) -> list:
    """Give a new message to queued runs whose last message is older than the threshold.

    This is how a run survives a pipe that deleted its message for a task that never started.
    A run that still has an outbox row is left alone: its message is on its way.
    """
    last_sent = sa.func.coalesce(runs.c.enqueued_at, runs.c.queued_at)
    pending = sa.exists().where(outbox.c.run_id == runs.c.id)
    stale = conn.execute(
        sa.select(runs.c.id)
        .where(runs.c.status == QUEUED,
               last_sent < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0,
                                                                 older_than_seconds),
               ~pending)
        .with_for_update(skip_locked=True)
    ).scalars().all()
    _add_to_outbox(conn, stale)
    return list(stale)


def fail_dead_lettered(conn: sa.Connection, run_id: uuid.UUID) -> bool:
    """Fail an open run whose message reached the dead-letter queue, unless a lease is live."""
    failed = conn.execute(
        sa.update(runs)
        .where(runs.c.id == run_id, runs.c.status.in_(OPEN_STATUSES),
               sa.or_(runs.c.lease_expires_at.is_(None),
                      runs.c.lease_expires_at < sa.func.now()))
        .values(status=RunStatus.FAILED.value, finished_at=sa.func.now(),
                updated_at=sa.func.now(), lease_owner=None, lease_expires_at=None,
                error="dead-lettered: every delivery of this run's message ended without a "
                      "result (the worker crashed or was stopped each time)")
        .returning(runs.c.id)
    ).one_or_none()
    return failed is not None


def _add_to_outbox(conn: sa.Connection, run_ids: list) -> None:
    if run_ids:
        conn.execute(sa.insert(outbox), [{"run_id": run_id} for run_id in run_ids])
