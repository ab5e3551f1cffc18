"""The worker process: polls the queue, executes runs concurrently, drains on SIGTERM.

Two shapes share this code. As a service it long-polls the queue until it is stopped. In
single-run mode (RUN_ID, as the pipe starts it) it executes that run, whose message the pipe
has already deleted, then polls for WORKER_LINGER_SECONDS of idleness and exits.

The database, not the queue, decides who executes a run: a message only says "look at this
run". Messages of runs that are finished are deleted; messages of runs leased by a live
worker are hidden until that lease would expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import signal
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from botocore.exceptions import BotoCoreError, ClientError

from flows import runs
from flows.outbox import relay_outbox
from flows.queue import parse_message_body
from flows.runs import ClaimRefused, Lease, LeaseLostError
from flows.settings import WorkerSettings
from worker.execution import Database, Outcome, RunExecutor, RunState
from worker.protection import TaskProtection

log = logging.getLogger("worker")

RECEIVE_WAIT_S = 20
MAX_VISIBILITY_S = 12 * 60 * 60
# A message stays hidden this much longer than the lease, so that after a crash it comes back
# once the lease has expired and the next worker can take the run over at the first receive.
VISIBILITY_MARGIN_S = 5
DELETE_BATCH_WINDOW_S = 0.02
# A message received while every slot is busy waits at most this long for one; then it goes
# back to the queue for an idle worker.
PREFETCH_HOLD_S = 2.0
SQS_ERRORS = (BotoCoreError, ClientError)


@dataclass(frozen=True)
class Job:
    """One run to look at: from a queue message (`receipt` set) or from RUN_ID (no message)."""

    run_id: uuid.UUID
    receipt: str | None = None


class MessageDeleter:
    """Deletes finished runs' messages in batches of up to 10 (one call instead of ten)."""

    def __init__(self, io: Callable[..., Any], sqs: Any, queue_url: str) -> None:
        self._io, self._sqs, self._queue_url = io, sqs, queue_url
        self._pending: asyncio.Queue[str | None] = asyncio.Queue()

    def delete(self, receipt: str) -> None:
        self._pending.put_nowait(receipt)

    async def close(self) -> None:
        self._pending.put_nowait(None)

    async def run(self) -> None:
        closing = False
        while not closing:
            first = await self._pending.get()
            if first is None:
                return
            batch = [first]
            deadline = asyncio.get_running_loop().time() + DELETE_BATCH_WINDOW_S
            while len(batch) < 10:
                timeout = deadline - asyncio.get_running_loop().time()
                try:
                    item = await asyncio.wait_for(self._pending.get(), max(timeout, 0))
                except TimeoutError:
                    break
                if item is None:
                    closing = True
                    break
                batch.append(item)
            await self._send(batch)

    async def _send(self, receipts: list[str]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts)]
        try:
            response = await self._io(self._sqs.delete_message_batch,
                                      QueueUrl=self._queue_url, Entries=entries)
        except SQS_ERRORS as exc:
            # The messages come back after their visibility timeout and are deleted then,
            # since their runs are finished.
            log.warning("deleting messages failed", extra={"error": str(exc)[:300]})
            return
        for failure in response.get("Failed", []):
            log.debug("message not deleted", extra={"error": failure.get("Message")})


class Worker:
    """Executes runs from the queue (and one run named by RUN_ID) until stopped."""

    def __init__(self, settings: WorkerSettings, *, engine: sa.Engine, sqs: Any,
                 protection: TaskProtection | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._sqs = sqs
        self._db = Database(engine)
        self._executor = RunExecutor(self._db,
                                     allow_private_targets=settings.allow_private_targets)
        self._protection = protection or TaskProtection(settings.ecs_agent_uri)
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, tuple[Job, asyncio.TimerHandle]] = {}
        self._closed = threading.Event()
        self._releasing = False
        self._stop_at: float | None = None
        self._stopping: asyncio.Event | None = None
        self._slot_free: asyncio.Event | None = None
        self._deleter: MessageDeleter | None = None
        self._queue_visibility_s = 0
        self._idle_since = 0.0

    # --- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        """Stop receiving and start the drain (SIGTERM, SIGINT)."""
        if self._stopping is None or self._stopping.is_set():
            return
        log.info("stopping: draining runs in progress",
                 extra={"in_progress": len(self._tasks),
                        "drain_seconds": self._settings.worker_drain_seconds})
        self._stop_at = asyncio.get_running_loop().time()
        self._closed.set()
        self._stopping.set()

    async def serve(self, run_id: uuid.UUID | None = None) -> int:
        """Run until stopped (or, in single-run mode, until the linger time passes idle)."""
        loop = asyncio.get_running_loop()
        threads = self._settings.worker_concurrency * 2 + 4
        loop.set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="worker-io"))
        self._stopping, self._slot_free = asyncio.Event(), asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        self._deleter = MessageDeleter(self._io, self._sqs, self._settings.queue_url)
        background = [asyncio.create_task(self._deleter.run()),
                      asyncio.create_task(self._protection.run())]
        self._queue_visibility_s = await self._read_queue_visibility()
        log.info("worker started", extra={
            "mode": "single-run" if run_id else "service", "run_id": str(run_id or ""),
            "concurrency": self._settings.worker_concurrency})

        if run_id is not None:
            self._spawn(Job(run_id))
            await self._wait_idle()
            if self._settings.worker_linger_seconds > 0:
                await self._poll(linger_s=self._settings.worker_linger_seconds)
        else:
            await self._poll(linger_s=None)

        await self._drain()
        await self._deleter.close()
        await self._protection.close()
        await asyncio.wait(background, timeout=10)
        log.info("worker stopped")
        return 0

    async def _wait_idle(self) -> None:
        while self._tasks and not self._stopping.is_set():
            self._slot_free.clear()
            await self._until_stopping(self._slot_free.wait())

    async def _drain(self) -> None:
        """Let runs in progress finish within the drain time, then release the rest."""
        if not self._tasks:
            return
        drain = self._settings.worker_drain_seconds
        # Keep the last part of the drain time for releasing what has not finished.
        margin = min(5.0, drain / 4)
        start = self._stop_at if self._stop_at is not None else asyncio.get_running_loop().time()
        remaining = start + drain - margin - asyncio.get_running_loop().time()
        if remaining > 0:
            await asyncio.wait(list(self._tasks), timeout=remaining)
        if self._tasks:
            self._releasing = True
            for task in self._tasks:
                task.cancel()
            await asyncio.wait(list(self._tasks), timeout=margin)

    # --- receiving ---------------------------------------------------------------------

    async def _poll(self, *, linger_s: float | None) -> None:
        """Receive and start runs while slots are free, until stopped or idle for `linger_s`."""
        loop = asyncio.get_running_loop()
        self._idle_since = loop.time()
        failures = 0
        while not self._stopping.is_set():
            idle_s = 0.0 if self._tasks else loop.time() - self._idle_since
            if linger_s is not None and idle_s >= linger_s:
                return
            # Receive full batches: a receive costs a round trip whatever it returns. So wait
            # until half a batch of slots is free, then ask for a whole batch; the few
            # messages beyond the free slots wait (briefly) for the next slot to free up.
            free = self._settings.worker_concurrency - len(self._tasks) - len(self._waiting)
            floor = max(1, min(10, self._settings.worker_concurrency) // 2)
            if free < floor:
                self._slot_free.clear()
                await self._until_stopping(self._slot_free.wait())
                continue
            wait = RECEIVE_WAIT_S
            if linger_s is not None:
                wait = max(1, min(RECEIVE_WAIT_S, math.ceil(linger_s - idle_s)))
            count = min(10, free + floor)
            received = _in_daemon_thread(functools.partial(self._receive, count, wait))
            done = await self._until_stopping(received)
            if not done:
                received.add_done_callback(self._return_late_messages)
                return
            try:
                messages = received.result()
                failures = 0
            except SQS_ERRORS as exc:
                failures += 1
                delay = min(20, 2 ** failures)
                log.warning("receiving messages failed", extra={
                    "error": str(exc)[:300], "retry_in_s": delay})
                await self._until_stopping(asyncio.sleep(delay))
                continue
            for message in messages:
                self._start_message(message)
        self._give_back_waiting()

    async def _until_stopping(self, awaitable: Any) -> bool:
        """Wait for `awaitable` unless the worker stops first; True when it completed."""
        future = asyncio.ensure_future(awaitable)
        stopping = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait([future, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if future in done:
            return True
        if not isinstance(awaitable, asyncio.Future):
            future.cancel()
        return False

    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        messages = self._sqs.receive_message(
            QueueUrl=self._settings.queue_url, MaxNumberOfMessages=count, WaitTimeSeconds=wait
        ).get("Messages", [])
        if messages and self._closed.is_set():
            self._make_visible(messages)
            return []
        return messages

    def _return_late_messages(self, future: asyncio.Future[list[dict[str, Any]]]) -> None:
        """Messages received after the stop go straight back to the queue."""
        if future.cancelled() or future.exception() is not None or not future.result():
            return
        messages = future.result()
        threading.Thread(target=self._make_visible, args=(messages,), daemon=True).start()

    def _make_visible(self, messages: list[dict[str, Any]]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                   for i, m in enumerate(messages)]
        with contextlib.suppress(*SQS_ERRORS):
            self._sqs.change_message_visibility_batch(QueueUrl=self._settings.queue_url,
                                                      Entries=entries)

    def _start_message(self, message: dict[str, Any]) -> None:
        try:
            run_id = parse_message_body(message.get("Body", ""))
        except ValueError as exc:
            # Nothing this service sent: keeping it would only cycle it to the dead-letter queue.
            log.warning("message deleted: not a run message", extra={"error": str(exc)})
            self._deleter.delete(message["ReceiptHandle"])
            return
        job = Job(run_id, message["ReceiptHandle"])
        if len(self._tasks) < self._settings.worker_concurrency:
            self._spawn(job)
            return
        timer = asyncio.get_running_loop().call_later(PREFETCH_HOLD_S, self._give_back, job)
        self._waiting[job.receipt] = (job, timer)

    def _give_back(self, job: Job) -> None:
        """Return a message that waited too long for a slot to the queue."""
        if self._waiting.pop(job.receipt or "", None) is not None:
            self._slot_free.set()
            message = {"ReceiptHandle": job.receipt}
            threading.Thread(target=self._make_visible, args=([message],), daemon=True).start()

    def _give_back_waiting(self) -> None:
        for job, timer in list(self._waiting.values()):
            timer.cancel()
            self._give_back(job)

    def _spawn(self, job: Job) -> None:
        task = asyncio.create_task(self._handle(job))
        self._tasks.add(task)
        self._protection.run_started()
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._waiting and not self._stopping.is_set():
            job, timer = self._waiting.pop(next(iter(self._waiting)))
            timer.cancel()
            self._spawn(job)
        if not self._tasks:
            self._idle_since = asyncio.get_running_loop().time()
        self._protection.run_ended()
        self._slot_free.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("run handler crashed", exc_info=task.exception())

    # --- one run -----------------------------------------------------------------------

    async def _handle(self, job: Job) -> None:
        """Claim the run, execute it with a heartbeat, and settle its message."""
        state = RunState()
        owner = runs.new_owner()
        try:
            claimed = await self._executor.claim(job.run_id, owner,
                                                 self._settings.worker_lease_seconds, state)
        except sa.exc.SQLAlchemyError as exc:
            log.error("claiming run failed; its message will come back", extra={
                "run_id": str(job.run_id), "error": str(exc)[:300]})
            return
        if isinstance(claimed, ClaimRefused):
            await self._refused(job, claimed)
            return

        lease = claimed.lease
        hidden_for = self._settings.worker_lease_seconds + VISIBILITY_MARGIN_S
        if job.receipt and self._queue_visibility_s < hidden_for:
            await self._extend_visibility(job, hidden_for)
        loop = asyncio.get_running_loop()
        started = loop.time()
        heartbeat = asyncio.create_task(self._heartbeat(lease, job, state))
        try:
            outcome = await self._executor.execute(claimed, state)
        except LeaseLostError as exc:
            if exc.status == "cancelled":
                outcome = Outcome("cancelled", error="cancelled while running")
            else:
                outcome = Outcome("lease_lost", error=f"lease lost; the run is now {exc.status}")
        except asyncio.CancelledError:
            if not self._releasing:
                raise
            heartbeat.cancel()
            await self._release(lease, job, state)
            self._log_outcome(lease, state, Outcome("released"), loop.time() - started)
            return
        except sa.exc.SQLAlchemyError as exc:
            # The lease runs out and the run is taken over (or reaped); keep the message.
            log.error("database failed during the run; leaving it to its lease", extra={
                "run_id": str(job.run_id), "error": str(exc)[:300]})
            return
        finally:
            heartbeat.cancel()
        if job.receipt:
            self._deleter.delete(job.receipt)
        self._log_outcome(lease, state, outcome, loop.time() - started)

    async def _refused(self, job: Job, refused: ClaimRefused) -> None:
        log.info("run not executed", extra={"run_id": str(job.run_id), "reason": refused.reason})
        if job.receipt is None:
            return
        if refused.retry_after is not None:
            # Look again just after the other worker's lease would expire.
            await self._extend_visibility(job, math.ceil(refused.retry_after) + 1)
        else:
            self._deleter.delete(job.receipt)

    async def _heartbeat(self, lease: Lease, job: Job, state: RunState) -> None:
        """Extend the lease and the message's visibility; stop the step if the lease is gone."""
        interval = self._settings.worker_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._db(state, runs.heartbeat, lease)
            except LeaseLostError as exc:
                state.lost, state.lost_status = True, exc.status
                if state.step_task is not None:
                    state.step_task.cancel()
                return
            except sa.exc.SQLAlchemyError as exc:
                log.warning("heartbeat failed", extra={
                    "run_id": str(lease.run_id), "error": str(exc)[:300]})
                continue
            if job.receipt:
                await self._extend_visibility(
                    job, self._settings.worker_lease_seconds + VISIBILITY_MARGIN_S)

    async def _release(self, lease: Lease, job: Job, state: RunState) -> None:
        """Give an unfinished run back: lease cleared, and its message visible or re-sent."""
        try:
            await self._db(state, runs.release, lease, send_message=job.receipt is None)
        except LeaseLostError:
            return
        except sa.exc.SQLAlchemyError as exc:
            log.error("releasing run failed; its lease will expire", extra={
                "run_id": str(lease.run_id), "error": str(exc)[:300]})
            return
        if job.receipt:
            await self._extend_visibility(job, 0)
            return
        try:
            await self._io(relay_outbox, self._engine, self._sqs, self._settings.queue_url)
        except (*SQS_ERRORS, sa.exc.SQLAlchemyError) as exc:
            log.warning("sending the released run's message failed; the scheduler relays it",
                        extra={"run_id": str(lease.run_id), "error": str(exc)[:300]})

    async def _extend_visibility(self, job: Job, seconds: int) -> None:
        try:
            await self._io(self._sqs.change_message_visibility,
                           QueueUrl=self._settings.queue_url, ReceiptHandle=job.receipt,
                           VisibilityTimeout=min(int(seconds), MAX_VISIBILITY_S))
        except SQS_ERRORS as exc:
            log.debug("changing message visibility failed",
                      extra={"run_id": str(job.run_id), "error": str(exc)[:300]})

    async def _read_queue_visibility(self) -> int:
        try:
            attributes = await self._io(self._sqs.get_queue_attributes,
                                        QueueUrl=self._settings.queue_url,
                                        AttributeNames=["VisibilityTimeout"])
            return int(attributes["Attributes"]["VisibilityTimeout"])
        except (*SQS_ERRORS, KeyError, ValueError) as exc:
            log.warning("reading the queue's visibility timeout failed; extending every "
                        "message on claim", extra={"error": str(exc)[:300]})
            return 0

    async def _io(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(fn, *args, **kwargs))

    def _log_outcome(self, lease: Lease, state: RunState, outcome: Outcome,
                     duration_s: float) -> None:
        extra = {
            "run_id": str(lease.run_id), "flow_id": str(lease.flow_id), "attempt": lease.attempt,
            "status": outcome.status,
            "queue_wait_s": round((lease.claimed_at - lease.queued_at).total_seconds(), 3),
            "duration_s": round(duration_s, 3), "db_ms": round(state.db_seconds * 1000, 3),
        }
        if outcome.error:
            extra["error"] = outcome.error[:500]
        log.info("run finished", extra=extra)


def _in_daemon_thread(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """Run `fn` on a daemon thread, which (unlike the executor's) never delays the exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result, error = fn(), None
        except Exception as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed while we waited
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, daemon=True, name="sqs-receive").start()
    return future
