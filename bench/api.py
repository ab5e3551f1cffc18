"""`make bench-api`: throughput and latency of creating runs, against a trivial route.

One uvicorn process serves the API over a throwaway PostgreSQL and moto's SQS server; a
separate load process keeps CONCURRENCY requests in flight over keep-alive connections. The
two routes alternate over several rounds, and the ratio is the median of the rounds' ratios.
Goal: runs/s of `POST /flows/{id}/runs` >= 0.25 x requests/s of `GET /healthz`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and all its threads, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class _Route:
    """One measured route, and its figures summed over the rounds."""

    name: str
    method: str
    path: str
    body: dict | None = None
    rates: list[float] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    requests: int = 0

    def measure(self, pid: int, port: int, *, headers: dict[str, str], total: int,
                concurrency: int) -> None:
        """One round of load, with the CPU time the server process spent on it."""
        cpu, started = _cpu_seconds(pid), time.perf_counter()
        rate, latencies = asyncio.run(_load(port, self.method, self.path, headers=headers,
                                            total=total, concurrency=concurrency,
                                            body=self.body))
        self.wall_s += time.perf_counter() - started
        self.cpu_s += _cpu_seconds(pid) - cpu
        self.rates.append(rate)
        self.latencies += latencies
        self.requests += total

    def report(self) -> None:
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(f"{self.name:<24} {statistics.median(self.rates):7.1f} req/s "
              f"({min(self.rates):.0f}-{max(self.rates):.0f})   "
              f"p50 {statistics.median(ordered) * 1000:6.2f} ms   p99 {p99 * 1000:6.2f} ms   "
              f"server CPU {self.cpu_s / self.requests * 1e6:5.0f} us/request "
              f"({self.cpu_s / self.wall_s:.0%} busy)")


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
    parser.add_argument("--requests", type=int, default=1000, help="per route and round")
    parser.add_argument("--rounds", type=int, default=6)
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
            trivial = _Route("GET /healthz (trivial)", "GET", "/healthz")
            runs = _Route("POST /flows/{id}/runs", "POST", f"/flows/{flow['id']}/runs",
                          body={"input": {"n": 1}})
            load = {"headers": headers, "concurrency": args.concurrency}
            # Warm both paths (connections, pools, imports) before measuring.
            for route in (trivial, runs):
                asyncio.run(_load(port, route.method, route.path, total=300, body=route.body,
                                  **load))
            # Alternate rounds, each route first in turn, so that a machine slowing down or
            # speeding up (a shared VM does) weighs on both routes alike.
            for round_number in range(args.rounds):
                order = (trivial, runs) if round_number % 2 == 0 else (runs, trivial)
                for route in order:
                    route.measure(server.pid, port, total=args.requests, **load)
            backlog = _outbox_backlog(postgres.url)
            relay_rate = _relay_rate(postgres.url, backlog)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()

    print(f"one uvicorn process; {args.rounds} alternating rounds of {args.requests} requests "
          f"per route, {args.concurrency} in flight; {pinned}")
    trivial.report()
    runs.report()
    print(f"outbox rows not yet relayed when the load stopped: {backlog}; the relay then "
          f"sent {relay_rate:.0f} rows/s (moto's SQS is the slow side)")
    ratios = [r / t for r, t in zip(runs.rates, trivial.rates, strict=True)]
    ratio = statistics.median(ratios)
    cpu_ratio = (trivial.cpu_s / trivial.requests) / (runs.cpu_s / runs.requests)
    verdict = "met" if ratio >= 0.25 else "NOT met"
    print(f"ratio runs/trivial: {ratio:.2f}, median of the rounds "
          f"({min(ratios):.2f}-{max(ratios):.2f}); server CPU per request, trivial/runs: "
          f"{cpu_ratio:.2f} (goal >= 0.25: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
