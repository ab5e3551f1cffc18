"""Flow CRUD and optimistic concurrency."""

from __future__ import annotations

from tests.api.conftest import flow_body


def test_create_get_list_delete(client):
    created = client.post("/flows", json=flow_body()).json()

    fetched = client.get(f"/flows/{created['id']}")
    assert fetched.json() == created
    assert fetched.headers["ETag"] == '"1"'
    assert created["version"] == 1
    assert created["steps"][0] == {"id": "shape", "type": "transform", "max_attempts": 1,
                                   "backoff_s": 1.0, "expression": "{greeting: input.name}"}
    assert [f["id"] for f in client.get("/flows").json()["items"]] == [created["id"]]

    assert client.delete(f"/flows/{created['id']}").status_code == 204
    assert client.get(f"/flows/{created['id']}").status_code == 404
    assert client.delete(f"/flows/{created['id']}").status_code == 404


def test_update_with_current_if_match_bumps_the_version(client, flow):
    response = client.put(f"/flows/{flow['id']}", json=flow_body(name="renamed"),
                          headers={"If-Match": '"1"'})

    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert response.json()["name"] == "renamed"
    assert response.headers["ETag"] == '"2"'


def test_stale_if_match_is_409_and_changes_nothing(client, flow):
    client.put(f"/flows/{flow['id']}", json=flow_body(name="first"), headers={"If-Match": '"1"'})

    stale = client.put(f"/flows/{flow['id']}", json=flow_body(name="second"),
                       headers={"If-Match": 'W/"1"'})

    assert stale.status_code == 409
    assert stale.json() == {
        "detail": f"flow {flow['id']} is at version 2, not 1; fetch it again and retry"
    }
    assert client.get(f"/flows/{flow['id']}").json()["name"] == "first"


def test_stale_version_field_is_409(client, flow):
    client.put(f"/flows/{flow['id']}", json=flow_body(version=1))

    assert client.put(f"/flows/{flow['id']}", json=flow_body(version=1)).status_code == 409
    assert client.put(f"/flows/{flow['id']}", json=flow_body(version=2)).status_code == 200


def test_unparseable_if_match_is_409(client, flow):
    response = client.put(f"/flows/{flow['id']}", json=flow_body(), headers={"If-Match": "*x"})

    assert response.status_code == 409
    assert "If-Match '*x' is not a version this API issued" in response.json()["detail"]


def test_flows_paginate_newest_first(client):
    ids = [client.post("/flows", json=flow_body(name=f"f{i}")).json()["id"] for i in range(5)]

    seen, cursor = [], None
    while True:
        page = client.get("/flows", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        seen += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(ids))
