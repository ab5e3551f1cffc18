"""Creating, listing and cancelling runs; idempotency; the outbox across an SQS outage."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

import boto3
import pytest
import sqlalchemy as sa

from api import database
from flows import repository
from flows.db import outbox, runs
from flows.migrate import migrate
from flows.outbox import relay_outbox
from flows.queue import sqs_client
from flows.settings import psycopg_url
from scripts.local_services import MotoServer, PostgresCluster
from tests.api.conftest import flow_body


def wait_for_messages(queues, count, attempts=20):
    found = []
    for _ in range(attempts):
        found += queues.run_ids()
        if len(found) >= count:
            break
    return found


def test_a_new_run_is_queued_once_with_only_its_id(client, flow, queues, db):
    response = client.post(f"/flows/{flow['id']}/runs", json={"input": {"name": "Ada"}})

    assert response.status_code == 201
    run = response.json()
    assert run["status"] == "queued"
    assert run["trigger"] == "api"
    assert run["input"] == {"name": "Ada"}
    assert run["flow_snapshot"]["steps"] == flow["steps"]
    messages = queues.receive_all(wait=5)
    assert [m["Body"] for m in messages] == [f'{{"run_id": "{run["id"]}"}}']
    with db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar() == 0


def test_the_snapshot_does_not_follow_later_edits(client, flow):
    run = client.post(f"/flows/{flow['id']}/runs", json={}).json()
    client.put(f"/flows/{flow['id']}", json=flow_body(steps=[
        {"id": "other", "type": "delay", "seconds": 1}]))

    assert client.get(f"/runs/{run['id']}").json()["flow_snapshot"]["steps"] == flow["steps"]


def test_concurrent_identical_idempotent_requests_make_one_run(client, flow, queues, db):
    def post(_):
        return client.post(f"/flows/{flow['id']}/runs", json={"input": {"n": 1}},
                           headers={"Idempotency-Key": "order-42"})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(16)))

    assert {r.status_code for r in responses} <= {200, 201}
    assert sorted(r.status_code for r in responses).count(201) == 1
    assert len({r.json()["id"] for r in responses}) == 1
    with db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar() == 1
    assert wait_for_messages(queues, 1) == [responses[0].json()["id"]]


def test_idempotency_key_is_per_flow_and_checks_the_input(client, flow):
    other = client.post("/flows", json=flow_body(name="other")).json()
    key = {"Idempotency-Key": "k1"}

    first = client.post(f"/flows/{flow['id']}/runs", json={"input": {"a": 1}}, headers=key)
    elsewhere = client.post(f"/flows/{other['id']}/runs", json={"input": {"a": 1}}, headers=key)
    changed = client.post(f"/flows/{flow['id']}/runs", json={"input": {"a": 2}}, headers=key)

    assert elsewhere.json()["id"] != first.json()["id"]
    assert changed.status_code == 409
    assert changed.json() == {"detail": "Idempotency-Key 'k1' was already used for this flow "
                                        "with a different input; use a new key for a new run"}


def test_runs_paginate_and_filter_by_status(client, flow):
    ids = [client.post(f"/flows/{flow['id']}/runs", json={}).json()["id"] for _ in range(5)]
    client.post(f"/runs/{ids[1]}/cancel")

    first = client.get(f"/flows/{flow['id']}/runs", params={"limit": 3}).json()
    second = client.get(f"/flows/{flow['id']}/runs",
                        params={"limit": 3, "cursor": first["next_cursor"]}).json()
    cancelled = client.get(f"/flows/{flow['id']}/runs", params={"status": "cancelled"}).json()

    assert [r["id"] for r in first["items"] + second["items"]] == list(reversed(ids))
    assert second["next_cursor"] is None
    assert [r["id"] for r in cancelled["items"]] == [ids[1]]
    bad = client.get(f"/flows/{flow['id']}/runs", params={"status": "done"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "status"


def test_cancel_a_queued_run_once(client, flow):
    run = client.post(f"/flows/{flow['id']}/runs", json={}).json()

    cancelled = client.post(f"/runs/{run['id']}/cancel")
    again = client.post(f"/runs/{run['id']}/cancel")

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    assert again.status_code == 409
    assert again.json() == {"detail": f"run {run['id']} is already cancelled; only queued or "
                                      "running runs can be cancelled"}


def test_deleting_a_flow_cancels_its_open_runs(client, flow):
    run = client.post(f"/flows/{flow['id']}/runs", json={}).json()

    client.delete(f"/flows/{flow['id']}")

    after = client.get(f"/runs/{run['id']}").json()
    assert (after["status"], after["error"]) == ("cancelled", "flow deleted")
    assert client.get(f"/flows/{flow['id']}/runs").status_code == 404


def test_the_outbox_keeps_runs_through_an_sqs_outage(make_client, db, aws_env, monkeypatch):
    outage = MotoServer().start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", outage.endpoint)
    queue_url = boto3.client("sqs").create_queue(QueueName="outage")["QueueUrl"]
    client = make_client(queue_url=queue_url)
    flow = client.post("/flows", json=flow_body()).json()
    outage.stop()

    created = [client.post(f"/flows/{flow['id']}/runs", json={}) for _ in range(3)]

    assert [r.status_code for r in created] == [201, 201, 201]
    with db.connect() as conn:
        pending = conn.execute(sa.select(outbox.c.run_id).order_by(outbox.c.id)).scalars().all()
    assert [str(run_id) for run_id in pending] == [r.json()["id"] for r in created]

    revived = MotoServer(port=outage.port).start()
    try:
        sqs = sqs_client()
        sqs.create_queue(QueueName="outage")
        assert relay_outbox(db, sqs, queue_url) == 3
        bodies = [m["Body"] for m in sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]]
        assert sorted(bodies) == sorted(f'{{"run_id": "{r.json()["id"]}"}}' for r in created)
        with db.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar() == 0
    finally:
        revived.stop()


def test_a_run_without_a_body_has_empty_input(client, flow):
    response = client.post(f"/flows/{flow['id']}/runs")

    assert response.status_code == 201
    assert response.json()["input"] == {}


def _terminate_other_connections(db) -> int:
    """Kill every other session on the database, as a restart or failover would."""
    with db.connect() as conn:
        return conn.execute(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )).scalar()


def test_a_run_is_created_once_when_its_pooled_connection_was_killed(client, flow, queues, db):
    client.post(f"/flows/{flow['id']}/runs", json={})  # leaves a connection in the pool
    queues.receive_all(wait=5)
    assert _terminate_other_connections(db) >= 1

    response = client.post(f"/flows/{flow['id']}/runs", json={"input": {"n": 2}})

    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    assert client.get(f"/runs/{run_id}").json()["input"] == {"n": 2}
    with db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar() == 2
    assert [m["Body"] for m in queues.receive_all(wait=5)] == [f'{{"run_id": "{run_id}"}}']


def test_reads_succeed_after_their_pooled_connections_were_killed(client, flow, db):
    client.get(f"/flows/{flow['id']}")
    assert _terminate_other_connections(db) >= 1

    response = client.get(f"/flows/{flow['id']}")

    assert response.status_code == 200, response.text
    assert response.json()["id"] == flow["id"]


def test_an_insert_repeated_after_it_committed_finds_its_own_run(flow, db):
    values = repository.run_values(UUID(flow["id"]), {"n": 1})
    with db.connect() as conn:
        first, first_created = repository.insert_run(conn, values)
        again, again_created = repository.insert_run(conn, values)
        queued = conn.execute(sa.select(outbox.c.run_id)).scalars().all()

    assert (first_created, again_created) == (True, True)
    assert again["id"] == first["id"] == values["run_id"]
    assert queued == [values["run_id"]]


@pytest.fixture
def own_cluster():
    """A migrated cluster of the test's own, free to stop and start again."""
    cluster = PostgresCluster().start()
    try:
        migrate(psycopg_url(cluster.url))
        yield cluster
    finally:
        cluster.remove()


def _client_with_a_run(make_client, cluster, **settings):
    """A client on `cluster`, a flow, and one run made, so that the pools hold a connection."""
    client = make_client(database_url=cluster.url, **settings)
    flow = client.post("/flows", json=flow_body()).json()
    client.post(f"/flows/{flow['id']}/runs", json={})
    return client, flow


def test_runs_get_503_while_the_database_is_down_and_201_after(make_client, own_cluster):
    client, flow = _client_with_a_run(make_client, own_cluster)

    own_cluster.stop()
    down = client.post(f"/flows/{flow['id']}/runs", json={})  # its connection is found dead
    down_again = client.post(f"/flows/{flow['id']}/runs", json={})  # none to be had
    down_read = client.get(f"/flows/{flow['id']}")
    own_cluster.start_existing()
    back = client.post(f"/flows/{flow['id']}/runs", json={})
    listed = client.get(f"/flows/{flow['id']}/runs").json()["items"]

    assert (down.status_code, down.json()) == (503, {"detail": "database unavailable; retry"})
    assert down.headers["Retry-After"] == "1"
    assert down_again.status_code == 503
    assert down_read.status_code == 503
    assert back.status_code == 201, back.text
    assert len(listed) == 2


def test_run_creation_recovers_at_once_after_a_long_outage(make_client, own_cluster,
                                                           monkeypatch):
    monkeypatch.setattr(database, "DRIVER_POOL_TIMEOUT_S", 1.0)  # keeps the test short
    # One connection, so the pool cannot grow around the one it is trying to restore.
    client, flow = _client_with_a_run(make_client, own_cluster, db_pool_size=1)

    own_cluster.stop()
    down = client.post(f"/flows/{flow['id']}/runs", json={})
    # Long enough for reconnection attempts backing off to be 8 s apart.
    time.sleep(8)
    own_cluster.start_existing()
    back = client.post(f"/flows/{flow['id']}/runs", json={})

    assert down.status_code == 503
    assert back.status_code == 201, back.text
