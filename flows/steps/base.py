"""The step registry and what every step type shares."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

STEP_OUTPUT_LIMIT_BYTES = 64 * 1024
STEP_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"


class StepError(Exception):
    """A step failed; `retryable` says whether its retry policy may try again."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, kw_only=True)
class StepContext:
    """What a step sees while it executes."""

    run_id: str
    step_id: str
    data: dict[str, Any]
    allow_private_targets: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


class StepBase(BaseModel):
    """Fields every step has. Subclasses set `type` to a Literal and implement `execute`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(pattern=STEP_ID_PATTERN, description="Unique within the flow.")
    max_attempts: int = Field(default=1, ge=1, le=10)
    backoff_s: float = Field(default=1.0, ge=0, le=60, description="First retry delay.")

    retry_on_error: ClassVar[bool] = False

    async def execute(self, context: StepContext) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class StepRegistry:
    """Step models by their `type` value."""

    def __init__(self) -> None:
        self._types: dict[str, type[StepBase]] = {}

    def register(self, model: type[StepBase]) -> type[StepBase]:
        (name,) = typing.get_args(model.model_fields["type"].annotation)
        if name in self._types:
            raise ValueError(f"step type {name!r} is registered twice")
        self._types[name] = model
        return model

    def models(self) -> tuple[type[StepBase], ...]:
        return tuple(self._types.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._types)


registry = StepRegistry()
