"""The HTTP client behind `http` steps: SSRF guard, timeouts, body cap and idempotency key.

Every TCP connection, the first and every redirect's, goes through `GuardedBackend`, which
resolves the host itself, refuses internal addresses and then connects to the address it
checked, so a DNS answer that changes between check and connect cannot slip past the guard.
TLS still verifies the certificate against the host name of the URL.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import socket
import ssl
import typing
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from flows import templating
from flows.steps.base import StepContext, StepError

if typing.TYPE_CHECKING:
    from flows.steps.http import HttpStep

RESPONSE_BODY_LIMIT_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
# Statuses worth another attempt when they are not expected: the service may recover.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "flow-builder/0.1"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Ranges a step may never reach unless ALLOW_PRIVATE_TARGETS is set. 169.254.0.0/16 holds the
# EC2 instance metadata and ECS credential endpoints; 100.64.0.0/10 is carrier-grade NAT.
BLOCKED_NETWORKS: tuple[IpNetwork, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
        "240.0.0.0/4", "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
    )
)


class TargetRefusedError(httpx.ConnectError):
    """The target resolves to an address that steps may not reach."""


def refusal_reason(address: str) -> str | None:
    """Why a step may not connect to `address`, or None when it may."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    for network in BLOCKED_NETWORKS:
        if ip.version == network.version and ip in network:
            return f"{ip} is in the internal range {network}"
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that checks each resolved address before connecting."""

    def __init__(self, *, allow_private: bool, exempt: Iterable[IpNetwork] = ()) -> None:
        self._allow_private = allow_private
        self._exempt = tuple(exempt)
        self._inner = httpcore.AnyIOBackend()

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to for `host`, after checking every address it resolves to."""
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )
        addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
        if not addresses:
            raise httpx.ConnectError(f"{host} does not resolve to any address")
        if not self._allow_private:
            for address in addresses:
                reason = refusal_reason(address)
                if reason and not self._is_exempt(address):
                    raise TargetRefusedError(
                        f"refused to connect to {host}: {reason}; steps may only call public "
                        "addresses (set ALLOW_PRIVATE_TARGETS=true for local development)"
                    )
        return addresses[0]

    def _is_exempt(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == net.version and ip in net for net in self._exempt)

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        address = await self.resolve(host, port)
        return await self._inner.connect_tcp(address, port, timeout=timeout,
                                             local_address=local_address,
                                             socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpx.ConnectError("steps cannot connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle takes milliseconds."""
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool built over `GuardedBackend`."""

    def __init__(self, backend: GuardedBackend) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False)
        # NOTE: httpx 0.28 takes no network backend argument, so the pool it built is
        # replaced with one over the guard; the SSRF tests fail if a new httpx changes this.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=10,
            max_keepalive_connections=0,
            network_backend=backend,
        )


def guarded_client(*, allow_private: bool, timeout_s: float,
                   exempt: Iterable[IpNetwork] = ()) -> httpx.AsyncClient:
    """A client that follows redirects, each one checked, and never uses proxy variables."""
    return httpx.AsyncClient(
        transport=GuardedTransport(GuardedBackend(allow_private=allow_private, exempt=exempt)),
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


async def send(step: HttpStep, context: StepContext, *,
               exempt: Iterable[IpNetwork] = ()) -> dict[str, Any]:
    """Send the step's request; return `{status, headers, body}` or raise StepError."""
    try:
        url = str(templating.render(step.url, context.data))
        headers = {str(k): str(v) for k, v in templating.render(step.headers, context.data).items()}
        body = templating.render(step.body, context.data)
    except templating.TemplateError as exc:
        raise StepError(str(exc)) from exc
    if not url.startswith(("http://", "https://")):
        raise StepError(f"url {url[:200]!r} must start with http:// or https://")
    # A caller-set key wins; otherwise the same step of the same run always sends the same key.
    if not any(name.lower() == "idempotency-key" for name in headers):
        headers["Idempotency-Key"] = f"{context.run_id}:{context.step_id}"

    client = guarded_client(allow_private=context.allow_private_targets,
                            timeout_s=step.timeout_s, exempt=exempt)
    try:
        async with client, asyncio.timeout(step.timeout_s):
            return await _exchange(client, step, url, headers, body)
    except TimeoutError as exc:
        raise StepError(f"no complete response within {step.timeout_s} s",
                        retryable=True) from exc
    except TargetRefusedError as exc:
        raise StepError(str(exc)) from exc
    except httpx.TooManyRedirects as exc:
        raise StepError(f"more than {MAX_REDIRECTS} redirects") from exc
    except httpx.TimeoutException as exc:
        raise StepError(f"timed out: {exc}", retryable=True) from exc
    except httpx.InvalidURL as exc:
        raise StepError(f"invalid url {url[:200]!r}: {exc}") from exc
    except (httpx.TransportError, OSError) as exc:
        raise StepError(f"request failed: {type(exc).__name__}: {exc}", retryable=True) from exc


async def _exchange(client: httpx.AsyncClient, step: HttpStep, url: str,
                    headers: dict[str, str], body: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    async with client.stream(step.method, url, **kwargs) as response:
        content = await _read_capped(response)
    if response.status_code not in step.accepted_statuses:
        raise StepError(
            f"{step.method} {_redacted(response.url)} returned {response.status_code}, expected "
            f"one of {_ranges(step.accepted_statuses)}: {content[:300].decode(errors='replace')}",
            retryable=response.status_code in RETRYABLE_STATUSES,
        )
    return {
        "status": response.status_code,
        "headers": dict(response.headers.items()),
        "body": _decode(content, response.headers.get("content-type", "")),
    }


async def _read_capped(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > RESPONSE_BODY_LIMIT_BYTES:
        raise StepError(f"response body of {declared} bytes exceeds the "
                        f"{RESPONSE_BODY_LIMIT_BYTES}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > RESPONSE_BODY_LIMIT_BYTES:
            raise StepError(f"response body exceeds the {RESPONSE_BODY_LIMIT_BYTES}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(content: bytes, content_type: str) -> Any:
    if not content:
        return None
    text = content.decode(errors="replace")
    if "json" in content_type.lower():
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _redacted(url: httpx.URL) -> str:
    """The URL without credentials or query string, which may carry secrets."""
    return str(url.copy_with(userinfo=b"", query=None))


def _ranges(codes: list[int]) -> str:
    if codes == list(range(codes[0], codes[-1] + 1)) and len(codes) > 2:
        return f"{codes[0]}-{codes[-1]}"
    return ", ".join(str(code) for code in codes)
