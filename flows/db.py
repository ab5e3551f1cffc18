"""Database schema (SQLAlchemy Core) and engine factory. Alembic migrations mirror this."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

metadata = sa.MetaData()
TZ = sa.DateTime(timezone=True)

flows = sa.Table(
    "flows",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("steps", JSONB, nullable=False),
    sa.Column("schedule", JSONB),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # The latest scheduled time the scheduler has handled; due times after it are pending.
    sa.Column("schedule_checked_until", TZ),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.Column("deleted_at", TZ),
    sa.Index("flows_recent", sa.text("created_at DESC"), sa.text("id DESC")),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("flow_id", UUID(as_uuid=True), sa.ForeignKey("flows.id"), nullable=False),
    sa.Column("flow_snapshot", JSONB, nullable=False),
    sa.Column("input", JSONB, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="queued"),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_expires_at", TZ),
    sa.Column("output", JSONB),
    sa.Column("error", sa.Text),
    sa.Column("trigger", sa.Text, nullable=False),
    sa.Column("scheduled_for", TZ),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("queued_at", TZ, nullable=False, server_default=sa.func.now()),
    # When a message for this run was last sent; the reaper requeues runs whose message is old.
    sa.Column("enqueued_at", TZ),
    sa.Column("started_at", TZ),
    sa.Column("finished_at", TZ),
    sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint(
        "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
        name="runs_status_valid",
    ),
    sa.CheckConstraint("trigger IN ('api', 'schedule')", name="runs_trigger_valid"),
    sa.UniqueConstraint("flow_id", "idempotency_key", name="runs_flow_idempotency_key"),
    sa.UniqueConstraint("flow_id", "scheduled_for", name="runs_flow_scheduled_for"),
    sa.Index("runs_flow_recent", "flow_id", sa.text("queued_at DESC"), sa.text("id DESC")),
    sa.Index("runs_open", "status", "lease_expires_at",
             postgresql_where=sa.text("status IN ('queued', 'running')")),
)

run_steps = sa.Table(
    "run_steps",
    metadata,
    sa.Column("run_id", UUID(as_uuid=True), sa.ForeignKey("runs.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("step_id", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("output", JSONB),
    sa.Column("error", sa.Text),
    sa.Column("started_at", TZ),
    sa.Column("finished_at", TZ),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("run_id", UUID(as_uuid=True), nullable=False),
    sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
)


ENGINE_OPTIONS = {
    "pool_pre_ping": True,
    "pool_recycle": 1800,
    # Fail fast when the database is unreachable, and name the connections in pg_stat_activity.
    "connect_args": {"connect_timeout": 5, "application_name": "flow-builder"},
}


def create_engine(url: str, *, pool_size: int = 5) -> sa.Engine:
    """A synchronous engine (worker, scheduler, migrations, the outbox relay)."""
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, **ENGINE_OPTIONS)


def create_async_engine(url: str, *, pool_size: int = 5, **options: Any) -> AsyncEngine:
    """An asyncio engine (the API); its connections belong to the event loop that opened them."""
    return _create_async_engine(url, pool_size=pool_size, max_overflow=pool_size,
                                **ENGINE_OPTIONS, **options)
