"""`http` steps: the SSRF guard (after DNS and on redirects), caps, timeouts, retry classes."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest

from flows.steps import StepContext, StepError
from flows.steps.http import HttpStep
from flows.steps.http_client import RESPONSE_BODY_LIMIT_BYTES, send
from tests.worker.conftest import TargetServer

LOOPBACK_ONLY = [ipaddress.ip_network("127.0.0.1/32")]


def call(url: str, *, allow_private: bool = False, exempt=(), data=None, **fields):
    step = HttpStep.model_validate({"type": "http", "id": "call", "url": url, **fields})
    context = StepContext(run_id="run-1", step_id="call", data=data or {"input": {}, "steps": {}},
                          allow_private_targets=allow_private)
    return asyncio.run(send(step, context, exempt=exempt))


@pytest.mark.parametrize(("host", "network"), [
    ("127.0.0.1", "127.0.0.0/8"),
    ("127.8.9.10", "127.0.0.0/8"),
    ("10.1.2.3", "10.0.0.0/8"),
    ("172.16.5.4", "172.16.0.0/12"),
    ("192.168.1.1", "192.168.0.0/16"),
    ("169.254.169.254", "169.254.0.0/16"),  # EC2 instance metadata
    ("169.254.170.2", "169.254.0.0/16"),  # ECS task credentials
    ("100.64.0.1", "100.64.0.0/10"),
    ("0.0.0.0", "0.0.0.0/8"),
    ("224.0.0.1", "224.0.0.0/4"),
    ("[::1]", "::1/128"),
    ("[fd00::1]", "fc00::/7"),
    ("[fe80::1]", "fe80::/10"),
    ("[ff02::1]", "ff00::/8"),
    ("[::ffff:127.0.0.1]", "127.0.0.0/8"),
])
def test_each_internal_range_is_refused(host, network):
    with pytest.raises(StepError) as caught:
        call(f"http://{host}:9/x", max_attempts=1)
    assert f"is in the internal range {network}" in str(caught.value)
    assert str(caught.value).startswith(f"refused to connect to {host.strip('[]')}")
    assert caught.value.retryable is False


def test_a_name_that_resolves_to_loopback_is_refused_after_dns():
    with pytest.raises(StepError, match=r"refused to connect to localhost: .*127\.0\.0\.1"):
        call("http://localhost:9/x")


def test_a_redirect_into_a_private_range_is_refused_before_connecting():
    inner = TargetServer(host="127.0.0.2").start()
    outer = TargetServer().start()
    outer.routes["/go"] = lambda handler, count: TargetServer.reply(
        handler, 302, {}, {"Location": inner.url("/secret")})
    try:
        # The first hop is allowed (exempt, standing in for a public address); the redirect
        # to 127.0.0.2 is refused and never reaches that server.
        with pytest.raises(StepError, match=r"refused to connect to 127\.0\.0\.2"):
            call(outer.url("/go"), exempt=LOOPBACK_ONLY)
        assert len(outer.calls("/go")) == 1
        assert inner.calls("/secret") == []
        # Control: with private targets allowed, the same redirect is followed.
        assert call(outer.url("/go"), allow_private=True)["body"]["path"] == "/secret"
        assert len(inner.calls("/secret")) == 1
    finally:
        inner.stop()
        outer.stop()


def test_a_redirect_to_the_metadata_endpoint_is_refused(target):
    target.routes["/meta"] = lambda handler, count: TargetServer.reply(
        handler, 301, {}, {"Location": "http://169.254.169.254/latest/meta-data/"})
    with pytest.raises(StepError, match=r"169\.254\.169\.254 is in the internal range"):
        call(target.url("/meta"), exempt=LOOPBACK_ONLY)


def test_request_carries_idempotency_key_and_rendered_fields(target):
    data = {"input": {"user": "ada", "n": 3}, "steps": {}}
    result = call(target.url("/users/{{ input.user }}"), allow_private=True, method="POST",
                  headers={"X-User": "{{ input.user }}"}, body={"n": "{{ input.n }}"}, data=data)
    recorded = target.calls("/users/ada")[0]
    assert recorded.headers["Idempotency-Key"] == "run-1:call"
    assert recorded.headers["X-User"] == "ada"
    assert recorded.body == b'{"n":3}'
    assert result["status"] == 200
    assert result["body"] == {"path": "/users/ada", "count": 1}


def test_a_caller_set_idempotency_key_is_kept(target):
    call(target.url("/k"), allow_private=True, headers={"idempotency-key": "mine"})
    assert target.calls("/k")[0].headers["idempotency-key"] == "mine"


def test_response_body_is_capped(target):
    def big(handler, count):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.end_headers()  # no length: the cap must hold while streaming
        for _ in range(RESPONSE_BODY_LIMIT_BYTES // 65536 + 2):
            handler.wfile.write(b"x" * 65536)

    target.routes["/big"] = big
    with pytest.raises(StepError, match="response body exceeds the 1048576-byte limit"):
        call(target.url("/big"), allow_private=True)


def test_slow_response_times_out_as_retryable(target):
    target.routes["/slow"] = lambda handler, count: (
        time.sleep(2), TargetServer.reply(handler, 200, {}))
    started = time.monotonic()
    with pytest.raises(StepError) as caught:
        call(target.url("/slow"), allow_private=True, timeout_s=0.5)
    assert time.monotonic() - started < 1.5
    assert caught.value.retryable is True
    assert "0.5 s" in str(caught.value) or "timed out" in str(caught.value)


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (429, True), (404, False),
                                                   (400, False)])
def test_unexpected_status_fails_retryable_or_not(target, status, retryable):
    target.routes["/status"] = lambda handler, count: TargetServer.reply(
        handler, status, {"why": "no"})
    with pytest.raises(StepError) as caught:
        call(target.url("/status"), allow_private=True)
    assert caught.value.retryable is retryable
    assert f"returned {status}, expected one of 200-299" in str(caught.value)


def test_expected_status_list_is_honoured(target):
    target.routes["/gone"] = lambda handler, count: TargetServer.reply(handler, 410, {"x": 1})
    assert call(target.url("/gone"), allow_private=True, expected_status=[410])["status"] == 410


def test_connection_refused_is_retryable():
    with pytest.raises(StepError) as caught:
        call("http://127.0.0.1:9/closed", allow_private=True)
    assert caught.value.retryable is True
    assert "request failed" in str(caught.value)
