"""Apply the Alembic migrations: `python -m flows.migrate`, or the Lambda `flows.migrate.handler`.

Two processes may run this at once (two deploys, a task and a trigger): a PostgreSQL advisory
lock serialises them, and the second finds the schema already at head.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from flows.db import create_engine
from flows.logs import configure_logging
from flows.settings import MigrateSettings, SettingsError, load_settings

log = logging.getLogger("flows.migrate")
MIGRATION_LOCK_KEY = 0x466C6F77  # "Flow": one advisory lock id for every migrating process


def migrate(url: str) -> str | None:
    """Upgrade the database at `url` to the latest revision; return that revision."""
    engine = create_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            connection.execute(sa.select(sa.func.pg_advisory_lock(MIGRATION_LOCK_KEY)))
            connection.commit()
            try:
                config = Config()
                config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
                revision = connection.execute(
                    sa.text("SELECT version_num FROM alembic_version")
                ).scalar()
            finally:
                connection.execute(sa.select(sa.func.pg_advisory_unlock(MIGRATION_LOCK_KEY)))
                connection.commit()
    finally:
        engine.dispose()
    log.info("database migrated", extra={"revision": revision})
    return revision


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point used by the deploy-time migration trigger; raises on failure."""
    settings = load_settings(MigrateSettings)
    configure_logging(settings.log_level)
    return {"revision": migrate(settings.sqlalchemy_url)}


def main() -> int:
    try:
        settings = load_settings(MigrateSettings)
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    configure_logging(settings.log_level)
    migrate(settings.sqlalchemy_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
