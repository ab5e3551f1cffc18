"""Bearer keys guard every route but the health checks; readiness follows the database."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from flows.logs import configure_logging
from scripts.local_services import PostgresCluster
from tests.api.conftest import API_KEY


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-key", f"Basic {API_KEY}", f"bearer{API_KEY}", "Bearer "],
)
def test_protected_routes_refuse_without_a_valid_key(client, header):
    headers = {"Authorization": header} if header else {}
    client.headers.pop("Authorization")

    response = client.get("/flows", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {
        "detail": "missing or invalid API key: send 'Authorization: Bearer <key>'"
    }


def test_any_configured_key_is_accepted(make_client):
    client = make_client(api_keys=f"first-key, {API_KEY}")
    client.headers.pop("Authorization")

    assert client.get("/flows", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert client.get("/flows", headers={"Authorization": "Bearer first-key"}).status_code == 200


def test_health_checks_need_no_key(client):
    client.headers.pop("Authorization")

    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}


def test_readiness_follows_the_database_down_and_back(make_client):
    cluster = PostgresCluster().start()
    try:
        client = make_client(database_url=cluster.url)
        assert client.get("/readyz").status_code == 200

        cluster.stop()
        down = client.get("/readyz")
        health = client.get("/healthz")
        cluster.start_existing()
        back = client.get("/readyz")
    finally:
        cluster.remove()

    assert (down.status_code, down.json()) == (503, {"detail": "database unreachable"})
    assert health.status_code == 200
    assert back.status_code == 200


def test_one_json_log_line_per_request_without_secrets(client, capsys):
    configure_logging("INFO")
    try:
        client.get("/flows", params={"limit": 5})
        client.get("/flows", headers={"Authorization": "Bearer wrong-key-value"})
    finally:
        logging.getLogger().handlers.clear()

    output = capsys.readouterr().out
    lines = [json.loads(line) for line in output.splitlines() if '"api.access"' in line]
    assert [(line["method"], line["route"], line["status"]) for line in lines] == [
        ("GET", "/flows", 200), ("GET", "/flows", 401)]
    assert all(line["level"] == "INFO" and line["duration_ms"] >= 0 for line in lines)
    assert API_KEY not in output
    assert "wrong-key-value" not in output


def test_openapi_declares_every_request_and_response_schema(client):
    spec = client.get("/openapi.json").json()

    schemas = spec["components"]["schemas"]
    for name in ("FlowCreate", "FlowUpdate", "FlowPublic", "FlowList", "RunCreate",
                 "RunPublic", "RunList", "ErrorBody", "HttpStep", "TransformStep", "DelayStep"):
        assert name in schemas, name
    create_run = spec["paths"]["/flows/{flow_id}/runs"]["post"]
    assert set(create_run["responses"]) >= {"200", "201", "401", "404", "409", "422"}
    assert "Idempotency-Key" in [p["name"] for p in create_run["parameters"]]


def test_the_process_stops_at_start_naming_every_bad_variable():
    env = {"PATH": os.environ["PATH"], "PORT": "not-a-port"}

    result = subprocess.run([sys.executable, "-m", "api"], env=env, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "invalid settings: DATABASE_SECRET_ARN: no database configured: set DATABASE_URL, "
        "DATABASE_SECRET_ARN, or all of DB_HOST, DB_USER, DB_PASSWORD, DB_NAME (missing: "
        "DB_HOST, DB_USER, DB_PASSWORD, DB_NAME); QUEUE_URL: Field required; "
        "API_KEYS_SECRET_ARN: no API keys configured: set API_KEYS or API_KEYS_SECRET_ARN; "
        "PORT: Input should be a valid integer, unable to parse string as an integer"
    )
