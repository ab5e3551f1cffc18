"""Flows, runs, per-step results and the outbox.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("steps", JSONB, nullable=False),
        sa.Column("schedule", JSONB),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("schedule_checked_until", TZ),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("deleted_at", TZ),
    )
    op.create_index("flows_recent", "flows", [sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_table(
        "runs",
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
    )
    op.create_index(
        "runs_flow_recent", "runs", ["flow_id", sa.text("queued_at DESC"), sa.text("id DESC")]
    )
    op.create_index(
        "runs_open", "runs", ["status", "lease_expires_at"],
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.create_table(
        "run_steps",
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
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("run_id", UUID(as_uuid=True), nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    for table in ("outbox", "run_steps", "runs", "flows"):
        op.drop_table(table)
