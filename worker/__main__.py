"""`python -m worker [--run-id ID]`: the queue worker, or single-run mode (RUN_ID)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from botocore.config import Config

from flows.db import create_engine
from flows.logs import configure_logging
from flows.settings import SettingsError, WorkerSettings, load_settings


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--run-id", help="execute this run first, then linger on the queue "
                                         "(default: RUN_ID from the environment)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(WorkerSettings)
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    raw_run_id = args.run_id or settings.run_id
    try:
        run_id = uuid.UUID(raw_run_id) if raw_run_id else None
    except ValueError:
        sys.stderr.write(f"invalid settings: RUN_ID: {raw_run_id!r} is not a UUID\n")
        return 2
    configure_logging(settings.log_level)

    import boto3  # noqa: PLC0415 - after the settings check, so bad config fails fast

    from worker.service import Worker  # noqa: PLC0415

    engine = create_engine(settings.sqlalchemy_url, pool_size=settings.db_pool_size)
    sqs = boto3.client("sqs", config=Config(
        connect_timeout=2, read_timeout=25, retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=settings.worker_concurrency * 2 + 4))
    try:
        return asyncio.run(Worker(settings, engine=engine, sqs=sqs).serve(run_id))
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
