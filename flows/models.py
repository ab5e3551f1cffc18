"""Flow and run models shared by the API, the worker and the scheduler."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, Literal, Union
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.steps import registry

MAX_STEPS = 50
MAX_INPUT_BYTES = 256 * 1024

Step = Annotated[Union[registry.models()], Field(discriminator="type")]  # noqa: UP007


def reject_nul(value: Any, path: str = "") -> None:
    """Refuse NUL characters anywhere in a JSON value: PostgreSQL text and jsonb refuse them."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{path or 'value'} contains a NUL character, which cannot be stored")
    elif isinstance(value, dict):
        for key, item in value.items():
            reject_nul(str(key), f"{path}.{key}" if path else "a key")
            reject_nul(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            reject_nul(item, f"{path}[{index}]")


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
# The statuses a run can still leave, as stored in the database.
OPEN_STATUSES = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


class Schedule(BaseModel):
    """A cron schedule in an IANA timezone."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    cron: str = Field(description="Five-field cron expression, e.g. '0 9 * * mon-fri'.")
    timezone: str = Field(default="UTC", description="IANA timezone name, e.g. Europe/Paris.")
    missed: Literal["skip", "run_once"] = Field(
        default="skip",
        description="After downtime: skip missed times, or run once for all of them.",
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a five-field cron expression")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA timezone name") from exc
        return value


class FlowDefinition(BaseModel):
    """What a run executes: the part of a flow copied into every run as its snapshot."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        reject_nul(data)
        return data

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    schedule: Schedule | None = None
    enabled: bool = True

    @field_validator("steps")
    @classmethod
    def _unique_ids(cls, steps: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for step in steps:
            if step.id in seen:
                raise ValueError(f"step id {step.id!r} is used twice; step ids must be unique")
            seen.add(step.id)
        return steps


class FlowCreate(FlowDefinition):
    """Body of `POST /flows`."""


class FlowUpdate(FlowDefinition):
    """Body of `PUT /flows/{id}`; `version` (or `If-Match`) guards against lost updates."""

    version: int | None = Field(default=None, ge=1)


class FlowPublic(FlowDefinition):
    id: UUID
    version: int
    created_at: datetime
    updated_at: datetime


class FlowList(BaseModel):
    items: list[FlowPublic]
    next_cursor: str | None


class RunCreate(BaseModel):
    """Body of `POST /flows/{id}/runs`."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict)

    @field_validator("input")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        reject_nul(value)
        return value


class StepResult(BaseModel):
    step_id: str
    status: Literal["running", "succeeded", "failed"]
    attempts: int
    output: Any = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunPublic(BaseModel):
    id: UUID
    flow_id: UUID
    status: RunStatus
    trigger: Literal["api", "schedule"]
    attempt: int
    input: dict[str, Any]
    output: Any = None
    error: str | None = None
    flow_snapshot: dict[str, Any]
    steps: list[StepResult]
    scheduled_for: datetime | None = None
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunSummary(BaseModel):
    id: UUID
    flow_id: UUID
    status: RunStatus
    trigger: Literal["api", "schedule"]
    attempt: int
    error: str | None = None
    scheduled_for: datetime | None = None
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunList(BaseModel):
    items: list[RunSummary]
    next_cursor: str | None
