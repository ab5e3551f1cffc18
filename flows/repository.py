"""Flows and runs in PostgreSQL: the API's reads and writes, as plain functions over a connection.

Every status change is a conditional UPDATE, so a terminal status is never overwritten.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert

from flows.db import TZ, flows, outbox, run_steps, runs
from flows.errors import (
    CursorError,
    IdempotencyConflictError,
    NotFoundError,
    RunStateError,
    VersionConflictError,
)
from flows.models import OPEN_STATUSES, FlowDefinition, RunStatus

FLOW_COLUMNS = (flows.c.id, flows.c.name, flows.c.description, flows.c.steps, flows.c.schedule,
                flows.c.enabled, flows.c.version, flows.c.created_at, flows.c.updated_at)
RUN_SUMMARY_COLUMNS = (runs.c.id, runs.c.flow_id, runs.c.status, runs.c.trigger, runs.c.attempt,
                       runs.c.error, runs.c.scheduled_for, runs.c.queued_at, runs.c.started_at,
                       runs.c.finished_at)


def _definition_values(definition: FlowDefinition) -> dict[str, Any]:
    data = definition.model_dump(mode="json", include=set(FlowDefinition.model_fields))
    return {**data, "schedule_checked_until": None}


def create_flow(conn: sa.Connection, definition: FlowDefinition) -> dict[str, Any]:
    values = _definition_values(definition)
    if definition.schedule:
        values["schedule_checked_until"] = sa.func.now()
    row = conn.execute(
        sa.insert(flows).values(id=uuid.uuid4(), **values).returning(*FLOW_COLUMNS)
    ).one()
    return row._asdict()


def get_flow(conn: sa.Connection, flow_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute(
        sa.select(*FLOW_COLUMNS).where(flows.c.id == flow_id, flows.c.deleted_at.is_(None))
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"flow {flow_id} not found")
    return row._asdict()


def list_flows(conn: sa.Connection, *, limit: int, cursor: str | None) -> tuple[list, str | None]:
    query = sa.select(*FLOW_COLUMNS).where(flows.c.deleted_at.is_(None))
    if cursor:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(sa.tuple_(flows.c.created_at, flows.c.id) < (created_at, last_id))
    rows = conn.execute(
        query.order_by(flows.c.created_at.desc(), flows.c.id.desc()).limit(limit + 1)
    ).all()
    return _page([row._asdict() for row in rows], limit, "created_at")


def update_flow(conn: sa.Connection, flow_id: uuid.UUID, definition: FlowDefinition,
                *, expected_version: int | None) -> dict[str, Any]:
    """Replace a flow's definition; with `expected_version`, only if it is still current."""
    current = get_flow(conn, flow_id)
    values = _definition_values(definition)
    if definition.schedule and definition.schedule.model_dump() == (current["schedule"] or {}):
        values.pop("schedule_checked_until")  # keep the scheduler's place for the same schedule
    elif definition.schedule:
        values["schedule_checked_until"] = sa.func.now()
    condition = [flows.c.id == flow_id, flows.c.deleted_at.is_(None)]
    if expected_version is not None:
        condition.append(flows.c.version == expected_version)
    row = conn.execute(
        sa.update(flows)
        .where(*condition)
        .values(**values, version=flows.c.version + 1, updated_at=sa.func.now())
        .returning(*FLOW_COLUMNS)
    ).one_or_none()
    if row is None:
        raise VersionConflictError(
            f"flow {flow_id} is at version {current['version']}, not {expected_version}; "
            "fetch it again and retry"
        )
    return row._asdict()


def delete_flow(conn: sa.Connection, flow_id: uuid.UUID) -> None:
    """Soft-delete a flow and cancel its open runs; finished runs stay readable."""
    result = conn.execute(
        sa.update(flows)
        .where(flows.c.id == flow_id, flows.c.deleted_at.is_(None))
        .values(deleted_at=sa.func.now(), enabled=False)
    )
    if result.rowcount == 0:
        raise NotFoundError(f"flow {flow_id} not found")
    conn.execute(
        sa.update(runs)
        .where(runs.c.flow_id == flow_id, runs.c.status.in_(OPEN_STATUSES))
        .values(status=RunStatus.CANCELLED.value, error="flow deleted",
                finished_at=sa.func.now(), updated_at=sa.func.now(),
                lease_owner=None, lease_expires_at=None)
    )


def create_run(conn: sa.Connection, flow_id: uuid.UUID, run_input: dict[str, Any], *,
               trigger: str = "api", idempotency_key: str | None = None,
               scheduled_for: datetime | None = None) -> tuple[dict[str, Any], bool]:
    """Queue a run of the flow's current definition; return (the run's row, created).

    With an idempotency key (or a scheduled time), a second request for the same flow returns
    the first run instead of creating another, even when both arrive at the same moment.
    """
    values = run_values(flow_id, run_input, trigger=trigger, idempotency_key=idempotency_key,
                        scheduled_for=scheduled_for)
    return insert_run(conn, values)


def run_values(flow_id: uuid.UUID, run_input: dict[str, Any], *, trigger: str = "api",
               idempotency_key: str | None = None,
               scheduled_for: datetime | None = None) -> dict[str, Any]:
    """The parameters of `INSERT_RUN` for one new run.

    The run's id is drawn here, once: an insert repeated with the same values after a lost
    connection finds its own run instead of creating a second one.
    """
    return {"run_id": uuid.uuid4(), "flow_id": flow_id, "run_input": run_input,
            "trigger": trigger, "idempotency_key": idempotency_key,
            "scheduled_for": scheduled_for}


def insert_run(conn: sa.Connection, values: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Run `INSERT_RUN` with `run_values`; return (the run's row, created)."""
    created = conn.execute(INSERT_RUN, values).one_or_none()
    if created is not None:
        return created._asdict(), True
    return existing_run(conn, values)


def existing_run(conn: sa.Connection, values: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The run that kept `INSERT_RUN` with `values` from inserting; (row, created).

    It is this request's own run when an earlier try of the same insert committed before its
    connection was lost (created), or the run made before with the same idempotency key or
    scheduled time (not created). Raises NotFoundError when the flow does not exist, and
    IdempotencyConflictError when the key was used with a different input.
    """
    own = conn.execute(sa.select(runs).where(runs.c.id == values["run_id"])).one_or_none()
    if own is not None:
        return own._asdict(), True
    flow_id, run_input = values["flow_id"], values["run_input"]
    idempotency_key = values["idempotency_key"]
    key_column = runs.c.idempotency_key if idempotency_key else runs.c.scheduled_for
    key = idempotency_key or values["scheduled_for"]
    existing = None
    if key is not None:
        existing = conn.execute(
            sa.select(runs).where(runs.c.flow_id == flow_id, key_column == key)
        ).one_or_none()
    if existing is None:
        raise NotFoundError(f"flow {flow_id} not found")
    if idempotency_key and existing.input != run_input:
        raise IdempotencyConflictError(
            f"Idempotency-Key {idempotency_key!r} was already used for this flow with a "
            "different input; use a new key for a new run"
        )
    return existing._asdict(), False


def _build_insert_run() -> sa.Select:
    """Insert a run, its definition copied from the flow as its snapshot, and its outbox row.

    One statement, so it is atomic without a transaction and costs one round trip. It returns
    the new run, or no row when the flow does not exist or the run's id, idempotency key or
    scheduled time is taken. Built once: building it costs more than running it.
    """
    snapshot = sa.func.jsonb_build_object(
        "name", flows.c.name, "description", flows.c.description, "steps", flows.c.steps,
        "schedule", flows.c.schedule, "version", flows.c.version,
    )
    source = sa.select(
        sa.bindparam("run_id", type_=UUID(as_uuid=True)), flows.c.id, snapshot,
        sa.bindparam("run_input", type_=JSONB), sa.bindparam("trigger", type_=sa.Text),
        sa.bindparam("idempotency_key", type_=sa.Text),
        sa.bindparam("scheduled_for", type_=TZ),
    ).where(flows.c.id == sa.bindparam("flow_id", type_=UUID(as_uuid=True)),
            flows.c.deleted_at.is_(None))
    columns = ["id", "flow_id", "flow_snapshot", "input", "trigger", "idempotency_key",
               "scheduled_for"]
    new_run = (
        insert(runs).from_select(columns, source).on_conflict_do_nothing()
        .returning(*runs.c).cte("new_run")
    )
    queued = sa.insert(outbox).from_select(["run_id"], sa.select(new_run.c.id)).cte("queued")
    return sa.select(new_run).add_cte(queued)


INSERT_RUN = _build_insert_run()


def get_run(conn: sa.Connection, run_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"run {run_id} not found")
    steps = conn.execute(
        sa.select(run_steps).where(run_steps.c.run_id == run_id).order_by(run_steps.c.position)
    ).all()
    return {**row._asdict(), "steps": [step._asdict() for step in steps]}


def list_runs(conn: sa.Connection, flow_id: uuid.UUID, *, limit: int, cursor: str | None,
              status: RunStatus | None) -> tuple[list, str | None]:
    get_flow(conn, flow_id)
    query = sa.select(*RUN_SUMMARY_COLUMNS).where(runs.c.flow_id == flow_id)
    if status is not None:
        query = query.where(runs.c.status == status.value)
    if cursor:
        queued_at, last_id = decode_cursor(cursor)
        query = query.where(sa.tuple_(runs.c.queued_at, runs.c.id) < (queued_at, last_id))
    rows = conn.execute(
        query.order_by(runs.c.queued_at.desc(), runs.c.id.desc()).limit(limit + 1)
    ).all()
    return _page([row._asdict() for row in rows], limit, "queued_at")


def cancel_run(conn: sa.Connection, run_id: uuid.UUID) -> dict[str, Any]:
    """Cancel a queued or running run and return it; a worker stops before its next step."""
    result = conn.execute(
        sa.update(runs)
        .where(runs.c.id == run_id, runs.c.status.in_(OPEN_STATUSES))
        .values(status=RunStatus.CANCELLED.value, finished_at=sa.func.now(),
                updated_at=sa.func.now(), lease_owner=None, lease_expires_at=None)
    )
    if result.rowcount == 0:
        status = conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).scalar()
        if status is None:
            raise NotFoundError(f"run {run_id} not found")
        raise RunStateError(f"run {run_id} is already {status}; only queued or running runs "
                            "can be cancelled")
    return get_run(conn, run_id)


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = json.loads(raw)
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise CursorError(f"cursor {cursor[:100]!r} is not one this service returned") from exc


def _page(rows: list[dict[str, Any]], limit: int, key: str) -> tuple[list, str | None]:
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last[key], last["id"])
