"""ECS task scale-in protection: on while any run is in progress, off when the worker is idle.

The ECS agent serves `$ECS_AGENT_URI/task-protection/v1/state` inside every task and acts
with the task role (which needs ecs:UpdateTaskProtection). Without ECS_AGENT_URI this is a
no-op. Failures are logged and retried at the next change: protection is a guard against
scale-in, never a reason to stop running work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

log = logging.getLogger("worker.protection")

# Protection lapses by itself after this long, so a worker that dies protected does not block
# scale-in forever; a busy worker renews it well before then.
PROTECTION_MINUTES = 60
RENEW_AFTER_S = 20 * 60
RETRY_AFTER_S = 10


class TaskProtection:
    """Keeps the task's scale-in protection in step with the number of runs in progress."""

    def __init__(self, agent_uri: str | None, *, timeout_s: float = 5.0) -> None:
        self._url = f"{agent_uri.rstrip('/')}/task-protection/v1/state" if agent_uri else None
        self._timeout_s = timeout_s
        self._busy = 0
        self._protected = False
        self._changed: asyncio.Event | None = None
        self._closing = False
        self._since = 0.0

    @property
    def enabled(self) -> bool:
        return self._url is not None

    def run_started(self) -> None:
        self._busy += 1
        self._notify()

    def run_ended(self) -> None:
        self._busy -= 1
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def run(self) -> None:
        """Reconcile until `close`; each change of busy/idle costs at most one agent call."""
        if self._url is None:
            return
        self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(timeout=self._timeout_s, trust_env=False) as client:
            while not self._closing:
                want = self._busy > 0
                if want != self._protected or (
                        want and loop.time() - self._since >= RENEW_AFTER_S):
                    await self._put(client, want)
                # A failed update is retried soon; a successful one waits for the next change.
                pending = (self._busy > 0) != self._protected
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(),
                                           RETRY_AFTER_S if pending else RENEW_AFTER_S)
                self._changed.clear()
            if self._protected:
                await self._put(client, False)

    async def close(self) -> None:
        self._closing = True
        self._notify()

    async def _put(self, client: httpx.AsyncClient, enabled: bool) -> None:
        body: dict[str, object] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = PROTECTION_MINUTES
        try:
            response = await client.put(self._url or "", json=body)
            answer = response.json() if response.content else {}
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("task protection update failed",
                        extra={"enabled": enabled, "error": str(exc)[:300]})
            return
        if response.is_error or "failure" in answer:
            log.warning("task protection update refused", extra={
                "enabled": enabled, "status": response.status_code,
                "answer": str(answer)[:300]})
            return
        self._protected = enabled
        self._since = asyncio.get_running_loop().time()
        log.debug("task protection updated", extra={"enabled": enabled})
