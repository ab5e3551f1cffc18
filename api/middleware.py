"""ASGI middleware: the request-body cap and one JSON log line per request."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

log = logging.getLogger("api.access")

Scope = dict[str, Any]


class RequestGuard:
    """Refuse bodies over `max_body_bytes` with 413 and log method, route, status, duration."""

    def __init__(self, app: Any, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": 500, "sent": False}
        limit = self.max_body_bytes

        async def send_logged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["sent"] = True
            await send(message)

        declared = _content_length(scope)
        try:
            if declared is not None and declared > limit:
                await _too_large(send_logged, limit)
                return
            received = 0

            async def receive_capped() -> dict[str, Any]:
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
                return message

            await self.app(scope, receive_capped, send_logged)
        except _BodyTooLarge:
            if not state["sent"]:
                await _too_large(send_logged, limit)
        finally:
            route = scope.get("route")
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": getattr(route, "path", None) or "unmatched",
                    "status": state["status"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )


class _BodyTooLarge(Exception):
    pass


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Any, limit: int) -> None:
    body = json.dumps({"detail": f"request body is larger than {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
