"""`make bench-api`: throughput and latency of creating runs, against a trivial route.

One uvicorn process serves the API over a throwaway PostgreSQL and moto's SQS server; a
separate load process keeps CONCURRENCY requests in flight over keep-alive connections.
Goal: runs/s of `POST /flows/{id}/runs` >= 0.25 x requests/s of `GET /healthz`.
"""

from __future__ import annotations

import argparse
import asyncio
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
from scripts.local_services import free_port, local_services, sqs_environment, wait_for_port


async def _load(url: str, method: str, *, headers: dict[str, str], total: int,
                concurrency: int, json: dict | None = None) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = total
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await client.request(method, url, json=json)
                latencies.append(time.perf_counter() - started)
                if response.status_code >= 300:
                    raise RuntimeError(f"{method} {url} answered {response.status_code}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return total / elapsed, latencies


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
        try:
            wait_for_port(port)
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {key}"}
            flow = httpx.post(f"{base}/flows", headers=headers, json={
                "name": "bench", "steps": [{"id": "t", "type": "transform", "expression": "input"}],
            }).json()
            # Warm both paths (connections, pools, imports) before measuring.
            asyncio.run(_load(f"{base}/healthz", "GET", headers=headers, total=200,
                              concurrency=args.concurrency))
            asyncio.run(_load(f"{base}/flows/{flow['id']}/runs", "POST", headers=headers,
                              total=200, concurrency=args.concurrency, json={"input": {}}))
            trivial = asyncio.run(_load(f"{base}/healthz", "GET", headers=headers,
                                        total=args.requests, concurrency=args.concurrency))
            runs = asyncio.run(_load(f"{base}/flows/{flow['id']}/runs", "POST", headers=headers,
                                     total=args.requests, concurrency=args.concurrency,
                                     json={"input": {"n": 1}}))
            backlog = _outbox_backlog(postgres.url)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()

    print(f"one uvicorn process, {args.requests} requests per route, "
          f"{args.concurrency} in flight")
    _report("GET /healthz (trivial)", *trivial)
    _report("POST /flows/{id}/runs", *runs)
    print(f"outbox rows not yet relayed when the load stopped: {backlog}")
    ratio = runs[0] / trivial[0]
    verdict = "met" if ratio >= 0.25 else "NOT met"
    print(f"ratio runs/trivial: {ratio:.2f} (goal >= 0.25: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
