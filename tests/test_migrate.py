"""`python -m flows.migrate` is safe to run from two processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import sqlalchemy as sa

from flows.db import create_engine, metadata
from flows.settings import psycopg_url


def test_two_concurrent_migrations_leave_one_schema_at_head(database_url, engine):
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    env = {**os.environ, "DATABASE_URL": url}

    processes = [subprocess.Popen([sys.executable, "-m", "flows.migrate"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    results = [(p.wait(120), p.stdout.read(), p.stderr.read()) for p in processes]

    assert [code for code, _, _ in results] == [0, 0], results
    assert all('"revision": "0001"' in out for _, out, _ in results)
    fresh = create_engine(psycopg_url(url), pool_size=1)
    try:
        tables = set(sa.inspect(fresh).get_table_names())
        assert tables == {table.name for table in metadata.sorted_tables} | {"alembic_version"}
        with fresh.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        assert [tuple(row) for row in versions] == [("0001",)]
    finally:
        fresh.dispose()
