"""Settings of every Flow Builder process, read from the environment in one place.

Each process builds exactly one settings class: `ApiSettings`, `WorkerSettings`,
`SchedulerSettings` or `MigrateSettings`. AWS region, credentials and endpoints
(`AWS_REGION`, `AWS_ENDPOINT_URL_SQS`, ...) are not settings: boto3 reads them itself.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_S = TypeVar("_S", bound=BaseSettings)


class SettingsError(Exception):
    """The environment is missing a variable or holds an invalid value."""


class DatabaseSettings(BaseSettings):
    """Where the PostgreSQL database is.

    One of three sources: `DATABASE_URL`; the `DB_*` fields that ECS injects from an
    RDS secret; or `DATABASE_SECRET_ARN`, a Secrets Manager secret read at start that
    holds either a URL or the RDS JSON document (for Lambda, which cannot inject secrets).
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    database_url: SecretStr | None = None
    db_host: str | None = None
    db_port: int = Field(default=5432, ge=1, le=65535)
    db_user: str | None = None
    db_password: SecretStr | None = None
    db_name: str | None = None
    database_secret_arn: str | None = Field(default=None, validate_default=True)
    db_pool_size: int = Field(default=5, ge=1, le=100)

    @field_validator("database_secret_arn", mode="after")
    @classmethod
    def _one_database_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Validated last among the database fields so that `info.data` holds the others;
        # a field validator (unlike a model validator) reports beside every other error.
        if value or info.data.get("database_url"):
            return value
        names = ("db_host", "db_user", "db_password", "db_name")
        missing = [name.upper() for name in names if not info.data.get(name)]
        if missing:
            raise ValueError(
                "no database configured: set DATABASE_URL, DATABASE_SECRET_ARN, or all of "
                f"DB_HOST, DB_USER, DB_PASSWORD, DB_NAME (missing: {', '.join(missing)})"
            )
        return value

    @cached_property
    def sqlalchemy_url(self) -> str:
        """The database URL in SQLAlchemy's psycopg 3 dialect."""
        if self.database_url:
            return psycopg_url(self.database_url.get_secret_value())
        if self.database_secret_arn:
            return psycopg_url(_read_database_secret(self.database_secret_arn))
        password = self.db_password.get_secret_value() if self.db_password else ""
        return (
            f"postgresql+psycopg://{quote(self.db_user or '', safe='')}:"
            f"{quote(password, safe='')}@{self.db_host}:{self.db_port}/{self.db_name}"
        )


class QueueSettings(DatabaseSettings):
    """The database plus the work queue that carries `{"run_id": ...}` messages."""

    queue_url: str = Field(min_length=1)
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")


class ApiSettings(QueueSettings):
    """Settings of `python -m api` and of the API Lambda handler."""

    api_keys: SecretStr | None = None
    api_keys_secret_arn: str | None = Field(default=None, validate_default=True)
    port: int = Field(default=8000, ge=1, le=65535)
    api_max_body_bytes: int = Field(default=1_048_576, ge=1024)

    @field_validator("api_keys_secret_arn", mode="after")
    @classmethod
    def _keys_configured(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value and not info.data.get("api_keys"):
            raise ValueError("no API keys configured: set API_KEYS or API_KEYS_SECRET_ARN")
        return value

    @cached_property
    def api_key_list(self) -> tuple[str, ...]:
        """The accepted bearer keys (comma-separated in the variable or the secret)."""
        if self.api_keys:
            raw = self.api_keys.get_secret_value()
        else:
            raw = _read_secret_string(self.api_keys_secret_arn or "")
        keys = tuple(key.strip() for key in raw.split(",") if key.strip())
        if not keys:
            raise SettingsError("API_KEYS holds no key: give at least one non-empty key")
        return keys


class WorkerSettings(QueueSettings):
    """Settings of `python -m worker`, as a service or started once per run by the pipe."""

    run_id: str | None = None
    worker_concurrency: int = Field(default=10, ge=1, le=100)
    worker_linger_seconds: int = Field(default=30, ge=0, le=900)
    worker_drain_seconds: int = Field(default=90, ge=1, le=110)
    worker_lease_seconds: int = Field(default=60, ge=10, le=900)
    allow_private_targets: bool = False
    ecs_agent_uri: str | None = None


class SchedulerSettings(QueueSettings):
    """Settings of the scheduler and reaper (`worker.scheduler`)."""

    dead_letter_queue_url: str | None = None
    scheduler_max_attempts: int = Field(default=3, ge=1, le=20)
    scheduler_requeue_after_seconds: int = Field(default=900, ge=60)
    scheduler_catch_up_limit: int = Field(default=1, ge=1, le=100)


class MigrateSettings(DatabaseSettings):
    """Settings of `python -m flows.migrate`: only the database."""

    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")


def load_settings(cls: type[_S], **overrides: Any) -> _S:
    """Build `cls` from the environment, or raise one error naming every bad variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if name else message)
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc


def psycopg_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    raise SettingsError("DATABASE_URL must start with postgresql:// or postgres://")


def _read_secret_string(arn: str) -> str:
    import boto3  # noqa: PLC0415 - only processes that use a secret pay for the client

    return boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]


def _read_database_secret(arn: str) -> str:
    """A URL from a secret holding either the URL itself or the RDS JSON document."""
    raw = _read_secret_string(arn).strip()
    if not raw.startswith("{"):
        return raw
    doc = json.loads(raw)
    if "url" in doc:
        return doc["url"]
    return (
        f"postgresql://{quote(doc['username'], safe='')}:{quote(doc['password'], safe='')}"
        f"@{doc['host']}:{doc.get('port', 5432)}/{doc.get('dbname', 'postgres')}"
    )
