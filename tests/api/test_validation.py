"""Bad input gets a 4xx whose message names the field; nothing a client sends gives a 500."""

from __future__ import annotations

import pytest

from tests.api.conftest import flow_body


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (flow_body(steps=[]), "steps", "List should have at least 1 item after validation, not 0"),
        (flow_body(name=""), "name", "String should have at least 1 character"),
        (
            flow_body(steps=[{"id": "a", "type": "http", "url": "https://x.test",
                              "timeout_s": 61}]),
            "steps[0].timeout_s",
            "Input should be less than or equal to 60",
        ),
        (
            flow_body(steps=[{"id": "a", "type": "delay", "seconds": 901}]),
            "steps[0].seconds",
            "Input should be less than or equal to 900",
        ),
        (
            flow_body(steps=[{"id": "a", "type": "http", "url": "ftp://x.test"}]),
            "steps[0].url",
            "must start with http:// or https:// (or be a {{ }} placeholder)",
        ),
        (
            flow_body(steps=[{"id": "a", "type": "transform", "expression": "input.["}]),
            "steps[0].expression",
            "invalid JMESPath expression 'input.[': Invalid jmespath expression: "
            "Incomplete expression",
        ),
        (
            flow_body(steps=[{"id": "a", "type": "delay", "seconds": 1},
                             {"id": "a", "type": "delay", "seconds": 1}]),
            "steps",
            "step id 'a' is used twice; step ids must be unique",
        ),
        (
            flow_body(steps=[{"id": "a", "type": "email"}]),
            "steps[0]",
            "Input tag 'email' found using 'type' does not match any of the expected tags: "
            "'delay', 'http', 'transform'",
        ),
        (
            flow_body(schedule={"cron": "61 * * * *"}),
            "schedule.cron",
            "'61 * * * *' is not a five-field cron expression",
        ),
        (
            flow_body(schedule={"cron": "0 9 * * *", "timezone": "Mars/Olympus"}),
            "schedule.timezone",
            "'Mars/Olympus' is not an IANA timezone name",
        ),
        (
            flow_body(schedule={"cron": "0 9 * * *", "missed": "all"}),
            "schedule.missed",
            "Input should be 'skip' or 'run_once'",
        ),
        (flow_body(colour="red"), "colour", "Extra inputs are not permitted"),
    ],
)
def test_invalid_flow_names_the_field(client, body, field, message):
    response = client.post("/flows", json=body)

    assert response.status_code == 422
    assert {"field": field, "message": message} in response.json()["errors"]
    assert response.json()["detail"].startswith("invalid request: ")
    assert f"{field}: {message}" in response.json()["detail"]


def test_malformed_json_is_422_not_500(client):
    response = client.post("/flows", content=b"{not json",
                           headers={"Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["message"] == "request body is not valid JSON"


def test_fifty_one_steps_are_refused(client):
    steps = [{"id": f"s{i}", "type": "delay", "seconds": 0} for i in range(51)]

    response = client.post("/flows", json=flow_body(steps=steps))

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "steps"


def test_placeholder_with_invalid_expression_is_refused(client):
    step = {"id": "a", "type": "http", "url": "https://x.test/{{ input.[ }}"}

    response = client.post("/flows", json=flow_body(steps=[step]))

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "steps[0].url"


def test_body_over_the_cap_is_413(make_client):
    client = make_client(api_max_body_bytes=2048)

    response = client.post("/flows", json=flow_body(description="x" * 3000))

    assert response.status_code == 413
    assert response.json() == {"detail": "request body is larger than 2048 bytes"}


def test_unknown_ids_are_404_and_bad_ids_422(client):
    missing = "00000000-0000-4000-8000-000000000000"

    assert client.get(f"/flows/{missing}").json() == {"detail": f"flow {missing} not found"}
    assert client.get(f"/runs/{missing}").status_code == 404
    assert client.post(f"/flows/{missing}/runs", json={}).status_code == 404
    assert client.get("/flows/not-a-uuid").status_code == 422


def test_run_input_must_be_an_object(client, flow):
    response = client.post(f"/flows/{flow['id']}/runs", json={"input": [1, 2]})

    assert response.status_code == 422
    assert response.json()["errors"][0] == {"field": "input",
                                            "message": "Input should be a valid dictionary"}


def test_bad_cursor_is_400(client):
    response = client.get("/flows", params={"cursor": "bm9wZQ"})

    assert response.status_code == 400
    assert response.json() == {"detail": "cursor 'bm9wZQ' is not one this service returned"}


def test_nul_characters_are_refused_naming_where(client, flow):
    bad_flow = client.post("/flows", json=flow_body(steps=[
        {"id": "a", "type": "http", "url": "https://x.test", "headers": {"X-A": "a\u0000b"}}]))
    bad_input = client.post(f"/flows/{flow['id']}/runs", json={"input": {"k": ["\u0000"]}})

    assert bad_flow.status_code == 422
    assert bad_flow.json()["errors"] == [{
        "field": "body",
        "message": "steps[0].headers.X-A contains a NUL character, which cannot be stored"}]
    assert bad_input.status_code == 422
    assert bad_input.json()["errors"] == [{
        "field": "input", "message": "k[0] contains a NUL character, which cannot be stored"}]
