"""`http`: call an HTTP service; placeholders in url, headers and body are rendered first."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from flows import templating
from flows.steps.base import StepBase, StepContext, registry

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@registry.register
class HttpStep(StepBase):
    """Send one request; a status outside `expected_status` fails the attempt."""

    type: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    url: str = Field(min_length=1, max_length=2048)
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    body: Any = Field(default=None, description="JSON body, sent as application/json.")
    timeout_s: float = Field(default=10, gt=0, le=60)
    expected_status: list[int] | None = Field(
        default=None, min_length=1, max_length=100,
        description="Statuses that count as success. Default: any 2xx status.",
    )
    max_attempts: int = Field(default=3, ge=1, le=10)

    retry_on_error = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        templating.check_placeholders(value)
        if not templating.PLACEHOLDER.match(value) and not value.startswith(
            ("http://", "https://")
        ):
            raise ValueError("must start with http:// or https:// (or be a {{ }} placeholder)")
        return value

    @field_validator("headers")
    @classmethod
    def _header_placeholders(cls, value: dict[str, str]) -> dict[str, str]:
        for text in value.values():
            templating.check_placeholders(text)
        return value

    @field_validator("expected_status")
    @classmethod
    def _status_codes(cls, value: list[int] | None) -> list[int] | None:
        bad = [code for code in value or () if not 100 <= code <= 599]
        if bad:
            raise ValueError(f"status codes must be 100..599, got {bad}")
        return value

    @property
    def accepted_statuses(self) -> list[int]:
        """`expected_status`, or every 2xx status when it is not set."""
        return self.expected_status or list(range(200, 300))

    async def execute(self, context: StepContext) -> Any:
        from flows.steps.http_client import send  # noqa: PLC0415 - keeps httpx off the API

        return await send(self, context)
