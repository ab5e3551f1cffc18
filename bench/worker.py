"""`make bench-worker`: runs/s of one worker process, against a bare receive-and-delete loop.

Both read the same local SQS endpoint (moto's server) and the same queue. The ceiling is a
loop that receives batches of 10 and deletes each batch in one call, doing nothing else. The
worker is the real `python -m worker` (default concurrency 10) executing trivial one-step
flows (a `transform`) over a throwaway PostgreSQL: claim, step start, step result and run end,
each fenced by the lease. Its rate is taken from the database timestamps of the first claim
and the last finish, so process start-up is not counted. Goal: ratio >= 0.7.
Also printed: the median database time per run, from the worker's own outcome log lines.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import sqlalchemy as sa

from flows import repository
from flows.db import create_engine, runs
from flows.migrate import migrate
from flows.models import FlowDefinition
from flows.outbox import relay_outbox
from flows.queue import message_body
from flows.settings import psycopg_url
from scripts.local_services import local_services, sqs_environment

GOAL = 0.7


def bare_loop(sqs, queue_url: str, rounds: int, batch: int) -> float:
    """Messages/s of receive (10) + delete_message_batch, over `rounds` of `batch` messages."""
    elapsed = 0.0
    for _ in range(rounds):
        for start in range(0, batch, 10):
            sqs.send_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "MessageBody": message_body(f"00000000-0000-0000-0000-{n:012d}")}
                for i, n in enumerate(range(start, min(start + 10, batch)))])
        deleted = 0
        started = time.perf_counter()
        while deleted < batch:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", [])
            if messages:
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)])
                deleted += len(messages)
        elapsed += time.perf_counter() - started
    return rounds * batch / elapsed


def worker_rounds(env: dict[str, str], engine: sa.Engine, sqs, queue_url: str, rounds: int,
                  batch: int, log_path: Path) -> tuple[float, list[float]]:
    """Feed a running `python -m worker` `rounds` of `batch` runs; (runs/s, db ms per run)."""
    definition = FlowDefinition.model_validate({
        "name": "bench", "steps": [{"id": "echo", "type": "transform", "expression": "input"}]})
    with engine.begin() as conn:
        flow = repository.create_flow(conn, definition)
    elapsed = 0.0
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "worker"], env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
        try:
            for _ in range(rounds):
                with engine.begin() as conn:
                    ids = [repository.create_run(conn, flow["id"], {"n": n})[0]["id"]
                           for n in range(batch)]
                if relay_outbox(engine, sqs, queue_url, limit=batch) != batch:
                    raise RuntimeError("not every message reached the queue")
                elapsed += _wait_for_round(engine, ids, process, log_path)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    db_ms = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("message") == "run finished" and record.get("status") == "succeeded":
                db_ms.append(record["db_ms"])
    return rounds * batch / elapsed, db_ms


def _wait_for_round(engine: sa.Engine, ids: list, process: subprocess.Popen,
                    log_path: Path) -> float:
    """Seconds from the round's first claim to its last finish, by the database clock."""
    deadline = time.monotonic() + 300
    query = sa.select(sa.func.count(), sa.func.min(runs.c.started_at),
                      sa.func.max(runs.c.finished_at)).where(
        runs.c.id.in_(ids), runs.c.status == "succeeded")
    while True:
        with engine.connect() as conn:
            done, first, last = conn.execute(query).one()
        if done == len(ids):
            return (last - first).total_seconds()
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker stopped or stalled; see {log_path}")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side")
    parser.add_argument("--batch", type=int, default=200, help="messages (runs) per round")
    args = parser.parse_args()

    with local_services() as (cluster, moto), tempfile.TemporaryDirectory() as scratch:
        aws = sqs_environment(moto.endpoint)
        os.environ.update(aws)
        migrate(psycopg_url(cluster.url))
        engine = create_engine(psycopg_url(cluster.url), pool_size=2)
        sqs = boto3.client("sqs")
        # As deployed: the queue hides a message longer than the worker's lease (60 s).
        queue_url = sqs.create_queue(QueueName="bench-work",
                                     Attributes={"VisibilityTimeout": "90"})["QueueUrl"]

        ceiling = bare_loop(sqs, queue_url, args.rounds, args.batch)
        env = {**os.environ, **aws, "DATABASE_URL": cluster.url, "QUEUE_URL": queue_url,
               "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        worker_rate, db_ms = worker_rounds(env, engine, sqs, queue_url, args.rounds,
                                           args.batch, Path(scratch) / "worker.log")
        engine.dispose()

    ratio = worker_rate / ceiling
    print(f"runs per side:                        {args.rounds} rounds x {args.batch}")
    print(f"bare receive-and-delete loop:         {ceiling:8.1f} messages/s")
    print(f"worker, one-step flows (1 process):   {worker_rate:8.1f} runs/s")
    print(f"ratio worker / bare loop:             {ratio:8.2f}  (goal >= {GOAL}: "
          f"{'met' if ratio >= GOAL else 'NOT met'})")
    if db_ms:
        print(f"database time per run (median):       {statistics.median(db_ms):8.2f} ms "
              f"(p90 {statistics.quantiles(db_ms, n=10)[-1]:.2f} ms, {len(db_ms)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
