"""The work queue: SQS messages carry `{"run_id": ...}` only; the database holds the run."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import boto3
from botocore.config import Config

# Fail fast so an SQS outage never holds an API request or a relay pass for long.
_CLIENT_CONFIG = Config(
    connect_timeout=2, read_timeout=25, retries={"max_attempts": 2, "mode": "standard"}
)


def sqs_client() -> Any:
    """An SQS client; region and endpoint come from the standard AWS SDK variables."""
    return boto3.client("sqs", config=_CLIENT_CONFIG)


def message_body(run_id: UUID | str) -> str:
    return json.dumps({"run_id": str(run_id)})


def parse_message_body(body: str) -> UUID:
    """The run id of a queue message; ValueError for anything this service did not send."""
    try:
        return UUID(json.loads(body)["run_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a run message: {body[:200]!r}") from exc


def send_runs(client: Any, queue_url: str, run_ids: list[UUID]) -> list[UUID]:
    """Send one message per run (batches of 10); return the ids SQS accepted."""
    sent: list[UUID] = []
    for start in range(0, len(run_ids), 10):
        batch = run_ids[start:start + 10]
        entries = [{"Id": str(i), "MessageBody": message_body(run_id)}
                   for i, run_id in enumerate(batch)]
        response = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        sent.extend(batch[int(item["Id"])] for item in response.get("Successful", []))
    return sent
