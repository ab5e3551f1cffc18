"""`make bench-api`: throughput and latency of creating runs, against a trivial route.

One uvicorn process serves the API over a throwaway PostgreSQL and moto's SQS server; a
separate load process keeps CONCURRENCY requests in flight over keep-alive connections.
Goal: runs/s of `POST /flows/{id}/runs` >= 0.25 x requests/s of `GET /healthz`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time

import boto3
import httpx
import sqlalchemy as sa

from flows.db import create_engine, outbox
from flows.migrate import migrate
from flows.settings import psycopg_url
from scripts.local_services import (
    free_port,
    local_services,
    pin_processes,
    sqs_environment,
    wait_for_port,
)


class _Connection:
    """A bare HTTP/1.1 keep-alive connection: a load generator far cheaper than a full client,
    so that on 2 cores the server, not the generator, is what gets measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


def _raw_request(method: str, path: str, port: int, headers: dict[str, str],
                 body: dict | None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             *(f"{k}: {v}" for k, v in headers.items()),
             "Content-Type: application/json", f"Content-Length: {len(payload)}", "", ""]
    return "\r\n".join(lines).encode() + payload


async def _load(port: int, method: str, path: str, *, headers: dict[str, str], total: int,
                concurrency: int, body: dict | None = None) -> tuple[float, list[float]]:
    raw = _raw_request(method, path, port, headers, body)
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        connection = _Connection(*await asyncio.open_connection("127.0.0.1", port))
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                status = await connection.request(raw)
                latencies.append(time.perf_counter() - started)
                if status >= 300:
                    raise RuntimeError(f"{method} {path} answered {status}")
        finally:
            connection.writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started), latencies


def _report(name: str, rate: float, latencies: list[float]) -> None:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:<28} {rate:8.1f} req/s   p50 {statistics.median(ordered) * 1000:7.2f} ms"
          f"   p99 {p99 * 1000:7.2f} ms")


def _outbox_backlog(url: str) -> int:
    engine = create_engine(psycopg_url(url), pool_size=1)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one()
    finally:
        engine.dispose()


def _relay_rate(url: str, backlog: int, seconds: float = 20) -> float:
    """Outbox rows relayed per second over the `seconds` after the load stopped."""
    time.sleep(seconds)
    return (backlog - _outbox_backlog(url)) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    key = secrets.token_urlsafe(24)

    with local_services() as (postgres, moto):
        migrate(psycopg_url(postgres.url))
        env = {**os.environ, **sqs_environment(moto.endpoint)}
        os.environ.update(sqs_environment(moto.endpoint))
        queue_url = boto3.client("sqs").create_queue(QueueName="bench-api")["QueueUrl"]
        port = free_port()
        env.update(DATABASE_URL=postgres.url, QUEUE_URL=queue_url, API_KEYS=key, PORT=str(port),
                   LOG_LEVEL="WARNING", DB_POOL_SIZE="20")
        server = subprocess.Popen([sys.executable, "-m", "api"], env=env)
        # The load generator sits with the services, so the API has a core of its own.
        pinned = pin_processes(measured=[server.pid],
                               services=[os.getpid(), moto.pid, postgres.postmaster_pid])
        try:
            wait_for_port(port)
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {key}"}
            flow = httpx.post(f"{base}/flows", headers=headers, json={
                "name": "bench", "steps": [{"id": "t", "type": "transform", "expression": "input"}],
            }).json()
            runs_path = f"/flows/{flow['id']}/runs"
            # Warm both paths (connections, pools, imports) before measuring.
            asyncio.run(_load(port, "GET", "/healthz", headers=headers, total=300,
                              concurrency=args.concurrency))
            asyncio.run(_load(port, "POST", runs_path, headers=headers, total=300,
                              concurrency=args.concurrency, body={"input": {}}))
            trivial = asyncio.run(_load(port, "GET", "/healthz", headers=headers,
                                        total=args.requests, concurrency=args.concurrency))
            runs = asyncio.run(_load(port, "POST", runs_path, headers=headers,
                                     total=args.requests, concurrency=args.concurrency,
                                     body={"input": {"n": 1}}))
            backlog = _outbox_backlog(postgres.url)
            relay_rate = _relay_rate(postgres.url, backlog)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()

    print(f"one uvicorn process, {args.requests} requests per route, "
          f"{args.concurrency} in flight; {pinned}")
    _report("GET /healthz (trivial)", *trivial)
    _report("POST /flows/{id}/runs", *runs)
    print(f"outbox rows not yet relayed when the load stopped: {backlog}; the relay then "
          f"sent {relay_rate:.0f} rows/s (moto's SQS is the slow side)")
    ratio = runs[0] / trivial[0]
    verdict = "met" if ratio >= 0.25 else "NOT met"
    print(f"ratio runs/trivial: {ratio:.2f} (goal >= 0.25: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
