"""Relay of the outbox: runs committed to the database reach the queue exactly once in order.

The API writes a run and its outbox row in one transaction, then wakes the relay; the
scheduler relays on every tick as the backstop. Rows are locked with SKIP LOCKED, so any number
of relays can run at once without sending a row twice.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sqlalchemy as sa
from botocore.exceptions import BotoCoreError, ClientError

from flows.db import outbox, runs
from flows.queue import send_runs

log = logging.getLogger("flows.outbox")
BATCH = 10
PASS_LIMIT = 100


def relay_outbox(engine: sa.Engine, client: Any, queue_url: str, *, limit: int = 1000) -> int:
    """Send pending outbox rows to the queue and delete them; return how many were sent."""
    total = 0
    while total < limit:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.select(outbox.c.id, outbox.c.run_id)
                .order_by(outbox.c.id)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                break
            sent = set(send_runs(client, queue_url, [row.run_id for row in rows]))
            done = [row.id for row in rows if row.run_id in sent]
            if done:
                conn.execute(sa.delete(outbox).where(outbox.c.id.in_(done)))
                conn.execute(
                    sa.update(runs).where(runs.c.id.in_(sent)).values(enqueued_at=sa.func.now())
                )
            total += len(done)
            if len(done) < len(rows):
                break
    return total


class OutboxRelay:
    """A background thread that relays the outbox when woken, and every `interval_s` anyway."""

    def __init__(self, engine: sa.Engine, client: Any, queue_url: str,
                 *, interval_s: float = 5.0) -> None:
        self._engine, self._client, self._queue_url = engine, client, queue_url
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval_s)
            self._wake.clear()
            try:
                # Small passes, so that stop() never waits behind a long backlog.
                while (not self._stop.is_set()
                       and relay_outbox(self._engine, self._client, self._queue_url,
                                        limit=PASS_LIMIT) >= PASS_LIMIT):
                    pass
            except (BotoCoreError, ClientError, sa.exc.SQLAlchemyError) as exc:
                # The rows stay in the outbox; the next pass or the scheduler sends them.
                log.warning("outbox relay failed", extra={"error": str(exc)[:300]})
                self._stop.wait(min(self._interval_s, 2.0))
