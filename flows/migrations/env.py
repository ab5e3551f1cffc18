"""Alembic environment: runs on the connection `flows.migrate` passes in (it holds the lock)."""

from alembic import context

from flows.db import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
