"""The API's database access: the shared synchronous repository, run on asyncio connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.db import create_async_engine

T = TypeVar("T")


class Database:
    """The API's connection pools, one pair per event loop."""

    def __init__(self, url: str, *, pool_size: int) -> None:
        self._url = url
        self._pool_size = pool_size
        # An asyncio connection belongs to the loop that opened it, and a test client, Mangum
        # and uvicorn each run their own loop. loop -> (transactional, autocommit) engines.
        self._engines: dict[asyncio.AbstractEventLoop, tuple[AsyncEngine, AsyncEngine]] = {}

    def _engine(self, *, transactional: bool) -> AsyncEngine:
        loop = asyncio.get_running_loop()
        engines = self._engines.get(loop)
        if engines is None:
            # Two pools, so that no connection switches its autocommit mode on every checkout.
            engines = (
                create_async_engine(self._url, pool_size=self._pool_size),
                create_async_engine(self._url, pool_size=self._pool_size,
                                    isolation_level="AUTOCOMMIT"),
            )
            self._engines[loop] = engines
        return engines[0] if transactional else engines[1]

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, ...)` without a transaction: reads and single statements."""
        async with self._engine(transactional=False).connect() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(connection, ...)` in one transaction, committed when it returns."""
        async with self._engine(transactional=True).begin() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    async def ping(self) -> bool:
        """Whether the database answers."""
        try:
            await self.read(lambda conn: conn.execute(sa.text("SELECT 1")))
        except (sa.exc.SQLAlchemyError, OSError):
            return False
        return True

    async def dispose(self) -> None:
        """Close this loop's connections."""
        for engine in self._engines.pop(asyncio.get_running_loop(), ()):
            await engine.dispose()
