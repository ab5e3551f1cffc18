"""The scheduler and reaper: one pass a minute, as a Lambda or `python -m worker.scheduler`.

A pass (`tick`) creates the runs of due schedules, fails runs whose message reached the
dead-letter queue, requeues runs whose lease expired (or fails them after the last attempt),
requeues queued runs whose message is gone, and relays the outbox. Every part is safe when two
passes overlap: rows are claimed with conditional updates or SKIP LOCKED.

Lambda: the worker image with entrypoint `python -m awslambdaric` and command
`worker.scheduler.handler`, invoked every minute. Locally: `python -m worker.scheduler`
(a pass at the start of every minute) or `python -m worker.scheduler --once`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import Any

import sqlalchemy as sa
from botocore.exceptions import BotoCoreError, ClientError

from flows import runs, schedules
from flows.db import create_engine
from flows.logs import configure_logging
from flows.outbox import relay_outbox
from flows.queue import parse_message_body, sqs_client
from flows.settings import SchedulerSettings, SettingsError, load_settings

log = logging.getLogger("worker.scheduler")

DEAD_LETTER_BATCHES = 10


class SchedulerPassError(Exception):
    """One or more parts of a scheduler pass failed (each is logged)."""


def tick(engine: sa.Engine, sqs: Any, settings: SchedulerSettings) -> dict[str, int]:
    """One scheduler pass; raises SchedulerPassError after running every part it can."""
    report: dict[str, int] = {}
    failed: list[str] = []
    parts = (
        ("scheduled", lambda: len(schedules.create_due_runs(
            engine, catch_up_limit=settings.scheduler_catch_up_limit))),
        ("dead_lettered", lambda: reap_dead_letters(engine, sqs, settings)),
        ("lease_expired", lambda: _reap_leases(engine, settings)),
        ("requeued_stale", lambda: _requeue_stale(engine, settings)),
        ("relayed", lambda: relay_outbox(engine, sqs, settings.queue_url)),
    )
    for name, part in parts:
        try:
            report[name] = part()
        except (sa.exc.SQLAlchemyError, BotoCoreError, ClientError) as exc:
            failed.append(name)
            log.error("scheduler pass part failed", extra={"part": name, "error": str(exc)[:500]})
    log.info("scheduler pass", extra={**report, "failed": failed})
    if failed:
        raise SchedulerPassError(f"scheduler pass failed in: {', '.join(failed)}")
    return report


def reap_dead_letters(engine: sa.Engine, sqs: Any, settings: SchedulerSettings) -> int:
    """Fail the runs whose message reached the dead-letter queue; delete those messages."""
    url = settings.dead_letter_queue_url
    if not url:
        return 0
    failed = 0
    for _ in range(DEAD_LETTER_BATCHES):
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            break
        for message in messages:
            try:
                run_id = parse_message_body(message.get("Body", ""))
            except ValueError as exc:
                log.warning("dead-letter message deleted: not a run message",
                            extra={"error": str(exc)})
            else:
                with engine.begin() as conn:
                    if runs.fail_dead_lettered(conn, run_id):
                        failed += 1
                        log.info("run failed: dead-lettered", extra={"run_id": str(run_id)})
            # Deleted only once the run is settled, so a database error leaves it for later.
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return failed


def _reap_leases(engine: sa.Engine, settings: SchedulerSettings) -> int:
    with engine.begin() as conn:
        requeued, failed = runs.reap_expired_leases(
            conn, max_attempts=settings.scheduler_max_attempts)
    for run_id in requeued:
        log.info("run requeued: lease expired", extra={"run_id": str(run_id)})
    for run_id in failed:
        log.info("run failed: lease expired on its last attempt", extra={"run_id": str(run_id)})
    return len(requeued) + len(failed)


def _requeue_stale(engine: sa.Engine, settings: SchedulerSettings) -> int:
    with engine.begin() as conn:
        stale = runs.requeue_stale_queued(
            conn, older_than_seconds=settings.scheduler_requeue_after_seconds)
    for run_id in stale:
        log.info("run requeued: queued without a live message", extra={"run_id": str(run_id)})
    return len(stale)


# --- Lambda ------------------------------------------------------------------------------

_lambda_state: tuple[SchedulerSettings, sa.Engine, Any] | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Lambda entry point (EventBridge, every minute): one pass; raises if any part failed."""
    global _lambda_state  # reused across warm invocations
    if _lambda_state is None:
        settings = load_settings(SchedulerSettings)
        configure_logging(settings.log_level)
        engine = create_engine(settings.sqlalchemy_url, pool_size=1)
        _lambda_state = (settings, engine, sqs_client())
    settings, engine, sqs = _lambda_state
    return tick(engine, sqs, settings)


# --- local loop --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.scheduler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="run one pass and exit")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(SchedulerSettings)
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    configure_logging(settings.log_level)
    engine = create_engine(settings.sqlalchemy_url, pool_size=1)
    sqs = sqs_client()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while True:
            try:
                tick(engine, sqs, settings)
            except SchedulerPassError:
                if args.once:
                    return 1
            if args.once or stop.wait(60 - time.time() % 60):
                return 0
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
