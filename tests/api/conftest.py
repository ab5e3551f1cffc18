"""An API app wired to the test database and a fresh queue, behind a TestClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from flows.settings import ApiSettings

API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def flow_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "greet",
        "description": "says hello",
        "steps": [
            {"id": "shape", "type": "transform", "expression": "{greeting: input.name}"},
            {"id": "pause", "type": "delay", "seconds": 0},
        ],
    }
    return {**body, **overrides}


@pytest.fixture
def make_client(database_url: str, db: Any, queues: Any) -> Iterator[Callable[..., TestClient]]:
    """Build clients for apps with optional setting overrides; all are closed afterwards."""
    opened: list[TestClient] = []

    def build(**overrides: Any) -> TestClient:
        values = {"database_url": database_url, "queue_url": queues.url, "api_keys": API_KEY,
                  **overrides}
        client = TestClient(create_app(ApiSettings(**values)), headers=AUTH,
                            raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield build
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def flow(client: TestClient) -> dict[str, Any]:
    response = client.post("/flows", json=flow_body())
    assert response.status_code == 201, response.text
    return response.json()
