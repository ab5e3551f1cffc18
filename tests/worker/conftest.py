"""Helpers for the worker tests: worker subprocesses, a target HTTP server, flows and runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

from flows import repository
from flows.db import run_steps, runs
from flows.models import FlowDefinition
from flows.outbox import relay_outbox

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 10  # the smallest lease WorkerSettings accepts; messages hide as long


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
    """Poll until `predicate` returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# --- target server -------------------------------------------------------------------------


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class TargetServer:
    """A real HTTP server on loopback that steps call; it records every request."""

    host: str = "127.0.0.1"
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    routes: dict[str, Callable[[BaseHTTPRequestHandler, int], None]] = field(
        default_factory=dict)

    def start(self) -> TargetServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with server._lock:
                    server.requests.append(Recorded(self.path, dict(self.headers.items()), body))
                    count = sum(1 for r in server.requests if r.path.split("?")[0] == path)
                route = server.routes.get(path, TargetServer.ok)
                route(self, count)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer((self.host, 0), Handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._http.shutdown()
        self._http.server_close()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?")[0] == path]

    @staticmethod
    def ok(handler: BaseHTTPRequestHandler, count: int) -> None:
        TargetServer.reply(handler, 200, {"path": handler.path, "count": count})

    @staticmethod
    def reply(handler: BaseHTTPRequestHandler, status: int, body: Any,
              headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(raw)

    def hang_first(self, handler: BaseHTTPRequestHandler, count: int) -> None:
        """The first call waits until the test releases it; later calls answer at once."""
        if count == 1:
            self.release.wait(120)
        self.reply(handler, 200, {"count": count})


@pytest.fixture
def target() -> Iterator[TargetServer]:
    server = TargetServer().start()
    server.routes["/hang-first"] = server.hang_first
    yield server
    server.stop()


# --- queue, flows and runs -----------------------------------------------------------------


@dataclass(frozen=True)
class WorkQueue:
    client: Any
    url: str
    dead_letter_url: str

    def visible(self, url: str | None = None) -> int:
        attributes = self.client.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    def total(self, url: str | None = None) -> int:
        attributes = self.client.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def work_queue(aws_env: dict[str, str]) -> WorkQueue:
    """A queue whose visibility timeout equals the test lease, with a 3-receive DLQ."""
    client = boto3.client("sqs")
    name = f"work-{uuid.uuid4().hex[:12]}"
    dlq_url = client.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = client.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = client.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": str(LEASE_SECONDS),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
    })["QueueUrl"]
    return WorkQueue(client=client, url=url, dead_letter_url=dlq_url)


def make_flow(engine: sa.Engine, steps: list[dict[str, Any]],
              schedule: dict[str, Any] | None = None) -> dict[str, Any]:
    definition = FlowDefinition.model_validate(
        {"name": "test flow", "steps": steps, "schedule": schedule})
    with engine.begin() as conn:
        return repository.create_flow(conn, definition)


def make_run(engine: sa.Engine, flow: dict[str, Any], queue: WorkQueue | None = None,
             run_input: dict[str, Any] | None = None) -> uuid.UUID:
    """Create a queued run; with a queue, relay its message there as the API would."""
    with engine.begin() as conn:
        run, _ = repository.create_run(conn, flow["id"], run_input or {})
        run_id = run["id"]
    if queue is not None:
        assert relay_outbox(engine, queue.client, queue.url) >= 1
    return run_id


def pipe_takes_message(queue: WorkQueue) -> None:
    """Do what the EventBridge pipe does: receive the run's message and delete it."""
    message = queue.client.receive_message(QueueUrl=queue.url)["Messages"][0]
    queue.client.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])


def run_row(engine: sa.Engine, run_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(runs).where(runs.c.id == run_id)).one()


def step_rows(engine: sa.Engine, run_id: uuid.UUID) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(run_steps).where(run_steps.c.run_id == run_id)).all()
    return {row.step_id: row for row in rows}


def status_is(engine: sa.Engine, run_id: uuid.UUID, *statuses: str) -> Callable[[], bool]:
    return lambda: run_row(engine, run_id).status in statuses


# --- worker subprocesses -------------------------------------------------------------------


class WorkerProcess:
    """`python -m worker` (or another module) as a real child process, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, args: list[str],
                 module: str = "worker") -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args], env=env, cwd=ROOT,
            stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._log.close()
        return code

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(raw))
            except ValueError:
                found.append({"message": raw})
        return found

    def outcomes(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("message") == "run finished"]

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def start_worker(database_url: str, aws_env: dict[str, str], work_queue: WorkQueue,
                 tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers against the test database and queue; every one is killed at the end."""
    started: list[WorkerProcess] = []

    def start(*args: str, module: str = "worker", **settings: Any) -> WorkerProcess:
        env = {key: value for key, value in os.environ.items() if not key.startswith(
            ("DB_", "DATABASE_", "RUN_ID", "WORKER_", "ECS_AGENT", "SCHEDULER_"))}
        env.update(aws_env)
        env.update({
            "DATABASE_URL": database_url, "QUEUE_URL": work_queue.url,
            "DEAD_LETTER_QUEUE_URL": work_queue.dead_letter_url,
            "WORKER_LEASE_SECONDS": str(LEASE_SECONDS), "WORKER_DRAIN_SECONDS": "10",
            "WORKER_LINGER_SECONDS": "0", "ALLOW_PRIVATE_TARGETS": "true", "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        })
        env.update({key.upper(): str(value) for key, value in settings.items()})
        process = WorkerProcess(env, tmp_path / f"{module}-{len(started)}.log", list(args),
                                module)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def running_step(engine: sa.Engine, run_id: uuid.UUID, step_id: str,
                 attempt: int = 1) -> Callable[[], bool]:
    """True once the run is in `step_id` on run attempt `attempt`."""
    def check() -> bool:
        row = run_row(engine, run_id)
        step = step_rows(engine, run_id).get(step_id)
        return (row.status == "running" and row.attempt == attempt and step is not None
                and step.status == "running")
    return check
