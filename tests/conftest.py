"""Real services for the whole suite: a throwaway PostgreSQL cluster and moto's SQS server.

`TEST_DATABASE_URL` points the suite at an existing database instead of a new cluster.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

from flows.db import create_engine, metadata
from flows.migrate import migrate
from flows.settings import psycopg_url
from scripts.local_services import MotoServer, PostgresCluster, sqs_environment

# No test may reach a real AWS account: a region and dummy credentials for every boto3 client
# created before a test points it at moto.
for _name, _value in sqs_environment("http://127.0.0.1:9").items():
    if _name != "AWS_ENDPOINT_URL_SQS":
        os.environ.setdefault(_name, _value)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster | None]:
    """The throwaway cluster (None when TEST_DATABASE_URL is set)."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def database_url(postgres: PostgresCluster | None) -> str:
    """A migrated database, as a plain postgresql:// URL."""
    url = os.environ.get("TEST_DATABASE_URL") or postgres.url
    migrate(psycopg_url(url))
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(psycopg_url(database_url), pool_size=10)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: sa.Engine) -> sa.Engine:
    """The engine, over empty tables."""
    names = ", ".join(table.name for table in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    return engine


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point every boto3 client made during the test at the moto server."""
    env = sqs_environment(moto_server.endpoint)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@dataclass(frozen=True)
class Queues:
    client: Any
    url: str
    dead_letter_url: str

    def receive_all(self, url: str | None = None, wait: int = 0) -> list[dict[str, Any]]:
        """Receive (without deleting) every message currently visible on a queue."""
        found: list[dict[str, Any]] = []
        while True:
            batch = self.client.receive_message(
                QueueUrl=url or self.url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
            ).get("Messages", [])
            if not batch:
                return found
            found.extend(batch)
            wait = 0

    def run_ids(self, url: str | None = None) -> list[str]:
        return [json.loads(m["Body"])["run_id"] for m in self.receive_all(url)]


@pytest.fixture
def queues(aws_env: dict[str, str]) -> Queues:
    """A fresh work queue with a dead-letter queue (3 receives) for this test."""
    client = boto3.client("sqs")
    name = f"flows-{uuid.uuid4().hex[:12]}"
    dlq_url = client.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = client.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    url = client.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": "30",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
        },
    )["QueueUrl"]
    return Queues(client=client, url=url, dead_letter_url=dlq_url)
