"""`make run`: PostgreSQL, moto's SQS, migrations, the API, a worker and the scheduler loop.

Everything is local and throwaway; Ctrl-C stops it all.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3

from flows.migrate import migrate
from flows.settings import psycopg_url
from scripts.local_services import local_services, sqs_environment, wait_for_port

log = logging.getLogger("scripts.run_local")
ROOT = Path(__file__).resolve().parent.parent


def _queues() -> tuple[str, str]:
    sqs = boto3.client("sqs")
    dead_letter_url = sqs.create_queue(QueueName="flow-runs-dlq")["QueueUrl"]
    dead_letter_arn = sqs.get_queue_attributes(
        QueueUrl=dead_letter_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": "5"})
    url = sqs.create_queue(
        QueueName="flow-runs", Attributes={"VisibilityTimeout": "120", "RedrivePolicy": redrive}
    )["QueueUrl"]
    return url, dead_letter_url


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C, and SIGTERM from a supervisor, both stop everything (even when started in the
    # background, where the shell leaves SIGINT ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    key = secrets.token_urlsafe(24)
    port = int(os.environ.get("PORT", "8000"))
    with local_services() as (postgres, moto):
        os.environ.update(sqs_environment(moto.endpoint))
        migrate(psycopg_url(postgres.url))
        queue_url, dead_letter_url = _queues()
        env = {**os.environ, "DATABASE_URL": postgres.url, "QUEUE_URL": queue_url,
               "DEAD_LETTER_QUEUE_URL": dead_letter_url, "API_KEYS": key, "PORT": str(port),
               "ALLOW_PRIVATE_TARGETS": "true"}
        commands = [[sys.executable, "-m", "api"]]
        if (ROOT / "worker" / "__main__.py").exists():
            commands.append([sys.executable, "-m", "worker"])
        if (ROOT / "worker" / "scheduler.py").exists():
            commands.append([sys.executable, "-m", "worker.scheduler"])
        processes = [subprocess.Popen(command, env=env, cwd=ROOT) for command in commands]
        try:
            wait_for_port(port)
            log.info("\nFlow Builder is running (Ctrl-C stops everything)\n"
                     "  API:        http://127.0.0.1:%s  (docs at /docs)\n"
                     "  API key:    %s\n"
                     "  processes:  %s\n"
                     "Try: export FLOW_URL=http://127.0.0.1:%s FLOW_KEY=%s\n",
                     port, key, ", ".join(" ".join(["python", *c[1:]]) for c in commands),
                     port, key)
            while all(process.poll() is None for process in processes):
                time.sleep(0.5)
            log.error("a process exited; stopping everything")
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(100)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    sys.exit(main())
