"""The API Lambda handler serves the same app from a Function URL event."""

from __future__ import annotations

import base64
import importlib
import json

from tests.api.conftest import API_KEY, flow_body


def function_url_event(method, path, body=None):
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"authorization": f"Bearer {API_KEY}", "content-type": "application/json",
                    "host": "abc.lambda-url.us-east-1.on.aws"},
        "requestContext": {"http": {"method": method, "path": path, "sourceIp": "203.0.113.9",
                                    "protocol": "HTTP/1.1", "userAgent": "test"},
                           "domainName": "abc.lambda-url.us-east-1.on.aws", "stage": "$default",
                           "requestId": "r1", "accountId": "123456789012", "apiId": "abc"},
        "body": base64.b64encode(json.dumps(body).encode()).decode() if body is not None else None,
        "isBase64Encoded": body is not None,
    }


def test_function_url_request_creates_and_queues_a_run(database_url, db, queues, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("QUEUE_URL", queues.url)
    monkeypatch.setenv("API_KEYS", API_KEY)
    module = importlib.reload(importlib.import_module("api.lambda_handler"))

    created = module.handler(function_url_event("POST", "/flows", flow_body()), None)
    flow = json.loads(created["body"])
    run = module.handler(function_url_event("POST", f"/flows/{flow['id']}/runs", {}), None)

    assert created["statusCode"] == 201
    assert run["statusCode"] == 201
    assert queues.run_ids() == [json.loads(run["body"])["id"]]
