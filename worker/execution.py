"""Execution of one claimed run: its steps in order, each with its retry policy.

Every result is written as soon as it exists, fenced by the lease, so a run delivered again
resumes after its last completed step, and a worker that lost its lease stops at its next
write. Each write also records the start of what comes next (the claim starts the first
pending step, a step's result starts the next step, the last step's result ends the run), so
a run of n steps costs n + 1 transactions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError

from flows import runs
from flows.models import RunStatus, Step
from flows.runs import Lease, LeaseLostError
from flows.steps import STEP_OUTPUT_LIMIT_BYTES, StepContext, StepError
from flows.steps.base import StepBase

log = logging.getLogger("worker.execution")

STEPS = TypeAdapter(list[Step])
MAX_BACKOFF_S = 300.0


@dataclass
class RunState:
    """What the heartbeat and the executor share about one run in progress."""

    db_seconds: float = 0.0
    # Set by the heartbeat when the lease is gone: the run's status as it found it.
    lost_status: str | None = None
    lost: bool = False
    step_task: asyncio.Future[Any] | None = None


@dataclass(frozen=True)
class ClaimedRun:
    """A leased run, its parsed steps, and the step whose first attempt the claim recorded."""

    lease: Lease
    steps: list[StepBase] | None
    snapshot_error: str | None = None
    started_step: str | None = None


@dataclass(frozen=True)
class Outcome:
    status: str
    output: Any = None
    error: str | None = None


class Database:
    """Runs functions of `flows.runs` in a transaction on a worker thread, timing each."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    async def __call__(self, state: RunState | None, fn: Callable[..., Any], *args: Any,
                       **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            None, self._in_transaction, state, fn, args, kwargs)

    def _in_transaction(self, state: RunState | None, fn: Callable[..., Any],
                        args: tuple, kwargs: dict) -> Any:
        started = time.perf_counter()
        try:
            with self.engine.begin() as conn:
                return fn(conn, *args, **kwargs)
        finally:
            if state is not None:
                state.db_seconds += time.perf_counter() - started


def claim_run(conn: sa.Connection, run_id: Any, owner: str,
              lease_seconds: float) -> ClaimedRun | runs.ClaimRefused:
    """Claim a run and, in the same transaction, start its first pending step."""
    result = runs.claim(conn, run_id, owner, lease_seconds)
    if isinstance(result, runs.ClaimRefused):
        return result
    try:
        steps: list[StepBase] = STEPS.validate_python(result.flow_snapshot.get("steps"))
    except ValidationError as exc:
        return ClaimedRun(result, None, f"the run's flow snapshot is invalid: {str(exc)[:500]}")
    position, step = _next_pending(result, steps, 0)
    if step is None:
        return ClaimedRun(result, steps)
    runs.start_step(conn, result, step.id, position, fence=False)
    return ClaimedRun(result, steps, started_step=step.id)


def _next_pending(lease: Lease, steps: list[StepBase],
                  start: int) -> tuple[int, StepBase | None]:
    for position in range(start, len(steps)):
        stored = lease.steps.get(steps[position].id)
        if not (stored and stored["status"] == "succeeded"):
            return position, steps[position]
    return len(steps), None


def backoff_delay(first_s: float, failed_attempts: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, capped."""
    ceiling = min(MAX_BACKOFF_S, first_s * 2 ** (failed_attempts - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not security


def check_output(output: Any) -> None:
    """Raise StepError unless the output is JSON within STEP_OUTPUT_LIMIT_BYTES."""
    try:
        size = len(json.dumps(output, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise StepError(f"step output is not JSON-serialisable: {exc}") from exc
    if size > STEP_OUTPUT_LIMIT_BYTES:
        raise StepError(f"step output is {size} bytes, over the limit of "
                        f"{STEP_OUTPUT_LIMIT_BYTES} bytes; reduce it with a transform step")


class RunExecutor:
    """Executes the steps of claimed runs."""

    def __init__(self, db: Database, *, allow_private_targets: bool,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self._db = db
        self._allow_private = allow_private_targets
        self._sleep = sleep

    async def claim(self, run_id: Any, owner: str, lease_seconds: float,
                    state: RunState) -> ClaimedRun | runs.ClaimRefused:
        return await self._db(state, claim_run, run_id, owner, lease_seconds)

    async def execute(self, claimed: ClaimedRun, state: RunState) -> Outcome:
        """Run the remaining steps; raises LeaseLostError when the run is no longer ours."""
        lease = claimed.lease
        if claimed.steps is None:
            error = claimed.snapshot_error or "the run's flow snapshot is invalid"
            await self._db(state, runs.finish_run, lease, RunStatus.FAILED, error=error)
            return Outcome(RunStatus.FAILED.value, error=error)

        steps = claimed.steps
        data: dict[str, Any] = {"input": lease.input, "steps": {}}
        started = claimed.started_step
        output: Any = None
        for position, step in enumerate(steps):
            stored = lease.steps.get(step.id)
            if step.id != started and stored and stored["status"] == "succeeded":
                output = data["steps"][step.id] = stored["output"]
                continue
            ok, result, attempts = await self._run_step(lease, state, step, position, data,
                                                        started=step.id == started)
            if not ok:
                error = f"step {step.id!r} failed after {attempts} attempt(s): {result}"
                await self._db(state, _finish_failed, lease, step.id, result, error)
                return Outcome(RunStatus.FAILED.value, error=error)
            output = data["steps"][step.id] = result
            next_position, next_step = _next_pending(lease, steps, position + 1)
            await self._db(state, _finish_succeeded, lease, step.id, result,
                           (next_step.id, next_position) if next_step else None)
            started = next_step.id if next_step else None
            if next_step is None:
                return Outcome(RunStatus.SUCCEEDED.value, output=output)
        # Every step had succeeded already (an earlier attempt stopped just before the end).
        await self._db(state, runs.finish_run, lease, RunStatus.SUCCEEDED, output=output)
        return Outcome(RunStatus.SUCCEEDED.value, output=output)

    async def _run_step(self, lease: Lease, state: RunState, step: StepBase, position: int,
                        data: dict[str, Any], *, started: bool) -> tuple[bool, Any, int]:
        """Attempt a step by its retry policy: (succeeded, output or error, attempts).

        `started`: the previous write already recorded the first attempt.
        """
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1 or not started:
                await self._db(state, runs.start_step, lease, step.id, position)
            context = StepContext(run_id=str(lease.run_id), step_id=step.id, data=data,
                                  allow_private_targets=self._allow_private)
            try:
                output = await self._guarded(step.execute(context), lease, state)
                check_output(output)
                return True, output, attempt
            except StepError as exc:
                retryable, message = exc.retryable, str(exc)
            except (LeaseLostError, asyncio.CancelledError):
                raise
            except Exception as exc:  # any failure of a step is the step's
                retryable, message = step.retry_on_error, f"{type(exc).__name__}: {exc}"
            if not retryable or attempt >= step.max_attempts:
                return False, message, attempt
            delay = backoff_delay(step.backoff_s, attempt)
            log.debug("step attempt failed; retrying", extra={
                "run_id": str(lease.run_id), "step_id": step.id, "attempt": attempt,
                "delay_s": round(delay, 3), "error": message[:300]})
            await self._db(state, runs.note_step_error, lease, step.id,
                           f"attempt {attempt} failed: {message}; retrying in {delay:.1f} s")
            await self._guarded(self._sleep(delay), lease, state)

    async def _guarded(self, awaitable: Awaitable[Any], lease: Lease, state: RunState) -> Any:
        # A task of its own, so the heartbeat can stop just this step when the lease is lost.
        task = asyncio.ensure_future(awaitable)
        state.step_task = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if state.lost and not (current and current.cancelling()):
                raise LeaseLostError(lease.run_id, state.lost_status) from None
            raise
        finally:
            state.step_task = None


def _finish_succeeded(conn: sa.Connection, lease: Lease, step_id: str, output: Any,
                      next_step: tuple[str, int] | None) -> None:
    if next_step is None:
        # finish_run is fenced itself, so the step's result needs no fence of its own.
        runs.finish_run(conn, lease, RunStatus.SUCCEEDED, output=output)
        runs.finish_step(conn, lease, step_id, succeeded=True, output=output, fence=False)
    else:
        runs.finish_step(conn, lease, step_id, succeeded=True, output=output)
        runs.start_step(conn, lease, *next_step, fence=False)


def _finish_failed(conn: sa.Connection, lease: Lease, step_id: str, step_error: str,
                   run_error: str) -> None:
    runs.finish_run(conn, lease, RunStatus.FAILED, error=run_error)
    runs.finish_step(conn, lease, step_id, succeeded=False, error=step_error, fence=False)
