"""The API's database access: the shared repository on asyncio connections, and a hot path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.db import ENGINE_OPTIONS, create_async_engine

T = TypeVar("T")
# How long a request waits for a free connection of the driver pool before it gets a 503, and
# how long the pool tries to restore a lost connection before it gives up on it. Giving up
# soon lets the next request open a new one at once: left to its exponential backoff, the
# pool would still be waiting for its next try minutes after a long outage ended.
DRIVER_POOL_TIMEOUT_S = 5.0


class ConnectionLostError(Exception):
    """The pooled connection died under a statement, which may or may not have run."""


class _DriverStatement:
    """A Core statement compiled once, with its parameters processed as SQLAlchemy would."""

    def __init__(self, statement: sa.Executable, dialect: sa.Dialect) -> None:
        self._compiled = statement.compile(dialect=dialect)
        self.sql = str(self._compiled)
        self._processors = {}
        for bind, name in self._compiled.bind_names.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self._processors[name] = process

    def parameters(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The statement's constants and `values`, each in the form the driver takes."""
        parameters = self._compiled.construct_params(values)
        for name, process in self._processors.items():
            parameters[name] = process(parameters[name])
        return parameters


@dataclass(frozen=True)
class _Pools:
    """One event loop's connections."""

    transactional: AsyncEngine
    autocommit: AsyncEngine
    # Opened by the first request of the loop; every later one awaits the finished task.
    driver: asyncio.Task[AsyncConnectionPool]


class Database:
    """The API's connection pools, per event loop: two engines and a driver pool."""

    def __init__(self, url: str, *, pool_size: int) -> None:
        self._url = url
        self._pool_size = pool_size
        # An asyncio connection belongs to the loop that opened it, and a test client, Mangum
        # and uvicorn each run their own loop.
        self._pools: dict[asyncio.AbstractEventLoop, _Pools] = {}
        self._statements: dict[sa.Executable, _DriverStatement] = {}

    def _loop_pools(self) -> _Pools:
        loop = asyncio.get_running_loop()
        pools = self._pools.get(loop)
        if pools is None:
            # Separate pools, so that no connection switches its autocommit mode on checkout.
            autocommit = create_async_engine(self._url, pool_size=self._pool_size,
                                             isolation_level="AUTOCOMMIT")
            pools = _Pools(
                transactional=create_async_engine(self._url, pool_size=self._pool_size),
                autocommit=autocommit,
                driver=loop.create_task(self._open_driver_pool(autocommit)),
            )
            self._pools[loop] = pools
        return pools

    async def _open_driver_pool(self, engine: AsyncEngine) -> AsyncConnectionPool:
        # Connected exactly as the engine connects: same parameters, same type adapters.
        _, parameters = engine.dialect.create_connect_args(engine.url)
        # Connections opened on demand up to the pool size (one statement each is quick), idle
        # ones beyond one closed after a while, each replaced after the engines' pool_recycle.
        pool = AsyncConnectionPool(
            kwargs={**parameters, **ENGINE_OPTIONS["connect_args"], "autocommit": True},
            min_size=1, max_size=self._pool_size, open=False, name="api-statements",
            timeout=DRIVER_POOL_TIMEOUT_S, reconnect_timeout=DRIVER_POOL_TIMEOUT_S,
            max_lifetime=ENGINE_OPTIONS["pool_recycle"],
        )
        await pool.open()
        return pool

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, ...)` without a transaction: reads and single statements."""
        async with self._loop_pools().autocommit.connect() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, ...)` in one transaction, committed when it returns."""
        async with self._loop_pools().transactional.begin() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    async def fetch_one(self, statement: sa.Executable,
                        values: Mapping[str, Any]) -> dict[str, Any] | None:
        """Run `statement` outside a transaction on psycopg; return its first row, or None.

        For the one statement of a hot path: SQLAlchemy's asyncio layer (greenlet hops, pool
        events, result wrapping) costs more CPU per call than psycopg itself. The statement,
        its compilation and the processing of its parameters stay SQLAlchemy's.

        Raises ConnectionLostError when the connection dies under it (the pool replaces it);
        the caller decides whether the statement may have run.
        """
        pools = self._loop_pools()
        driver_statement = self._statements.get(statement)
        if driver_statement is None:
            driver_statement = _DriverStatement(statement, pools.autocommit.dialect)
            self._statements[statement] = driver_statement
        parameters = driver_statement.parameters(values)
        pool = await pools.driver
        async with pool.connection() as conn:
            try:
                async with conn.cursor(row_factory=dict_row, binary=True) as cursor:
                    await cursor.execute(driver_statement.sql, parameters)
                    return await cursor.fetchone()
            except psycopg.Error as exc:
                if not conn.broken:
                    raise
                raise ConnectionLostError(str(exc)) from exc

    async def ping(self) -> bool:
        """Whether the database answers."""
        try:
            await self.read(lambda conn: conn.execute(sa.text("SELECT 1")))
        except (sa.exc.SQLAlchemyError, OSError):
            return False
        return True

    async def dispose(self) -> None:
        """Close this loop's connections."""
        pools = self._pools.pop(asyncio.get_running_loop(), None)
        if pools is None:
            return
        await pools.transactional.dispose()
        await pools.autocommit.dispose()
        await (await pools.driver).close()
