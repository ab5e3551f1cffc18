"""Due times of cron schedules and the scheduler pass that turns them into runs.

Cron expressions are matched against wall-clock time in the flow's IANA timezone, so a daily
09:00 run stays at 09:00 local time across daylight-saving changes. Each matching wall-clock
time fires once: a time skipped by a spring-forward change fires at the same distance after
the gap (02:30 becomes 03:30 in the new offset); a time repeated by a fall-back change fires
at its first occurrence only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from croniter import croniter
from pydantic import ValidationError

from flows import repository
from flows.db import flows
from flows.models import Schedule

log = logging.getLogger("flows.schedules")

# A due time older than this when the scheduler sees it counts as missed (the scheduler was
# down or late), and the flow's `missed` policy decides whether it still gets a run.
MISSED_AFTER = timedelta(minutes=5)
# Bounds the work of one pass for a flow not checked for a long time (disabled for a year):
# older scheduled times are not considered at all, not even by `run_once`.
MAX_LOOKBACK = timedelta(days=7)


@dataclass(frozen=True)
class Plan:
    """What one pass does for one flow: the scheduled times to run, and the times skipped."""

    run_at: tuple[datetime, ...]
    skipped: tuple[datetime, ...]


def due_times(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    """Scheduled times in (`after`, `until`], ascending, as aware UTC datetimes.

    Times more than MAX_LOOKBACK before `until` are left out.
    """
    zone = ZoneInfo(schedule.timezone)
    after = max(after, until - MAX_LOOKBACK)
    # Iterate on naive wall-clock time; start an hour early so a fold is not stepped over.
    start = after.astimezone(zone).replace(tzinfo=None) - timedelta(hours=1)
    found: list[datetime] = []
    seen: set[datetime] = set()
    cursor = croniter(schedule.cron, start)
    while True:
        local: datetime = cursor.get_next(datetime)
        # fold=0: a repeated time maps to its first occurrence, a skipped one past the gap.
        at = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if at > until:
            # Wall-clock order and UTC order differ by at most the size of a DST shift.
            if at - until > timedelta(hours=3):
                break
            continue
        if at > after and at not in seen:
            seen.add(at)
            found.append(at)
    return sorted(found)


def plan(schedule: Schedule, due: list[datetime], now: datetime, *,
         catch_up_limit: int = 1) -> Plan:
    """Which due times get a run, by the `missed` policy.

    Due times within MISSED_AFTER of `now` are on time and run (the latest `catch_up_limit`
    of them). Older ones were missed: `skip` drops them, `run_once` runs the latest of them
    once, standing in for all of them.
    """
    on_time = [at for at in due if now - at <= MISSED_AFTER]
    missed = [at for at in due if now - at > MISSED_AFTER]
    run_at = on_time[-catch_up_limit:]
    if schedule.missed == "run_once" and missed:
        run_at = [missed[-1], *run_at]
    chosen = set(run_at)
    skipped = [at for at in due if at not in chosen]
    return Plan(run_at=tuple(run_at), skipped=tuple(skipped))


def create_due_runs(engine: sa.Engine, *, catch_up_limit: int = 1,
                    now: datetime | None = None) -> list[tuple[Any, datetime]]:
    """Create the runs of every due schedule; return (flow id, scheduled time) of new runs.

    Each flow is handled in its own transaction with its row locked (SKIP LOCKED), so two
    passes at once split the flows between them; the unique (flow, scheduled time) constraint
    makes a second run for the same time impossible even so.
    """
    with engine.connect() as conn:
        flow_ids = conn.execute(
            sa.select(flows.c.id).where(flows.c.schedule.is_not(None), flows.c.enabled,
                                        flows.c.deleted_at.is_(None))
        ).scalars().all()
    created: list[tuple[Any, datetime]] = []
    for flow_id in flow_ids:
        with engine.begin() as conn:
            created.extend(_schedule_flow(conn, flow_id, catch_up_limit, now))
    return created


def _schedule_flow(conn: sa.Connection, flow_id: Any, catch_up_limit: int,
                   now: datetime | None) -> list[tuple[Any, datetime]]:
    row = conn.execute(
        sa.select(*repository.FLOW_COLUMNS, flows.c.schedule_checked_until,
                  sa.func.now().label("db_now"))
        .where(flows.c.id == flow_id, flows.c.schedule.is_not(None), flows.c.enabled,
               flows.c.deleted_at.is_(None))
        .with_for_update(skip_locked=True, of=flows)
    ).one_or_none()
    if row is None:
        return []  # another pass holds it, or it changed since the list was read
    flow = row._asdict()
    now = now or flow.pop("db_now")
    checked_until = flow.pop("schedule_checked_until") or now
    try:
        schedule = Schedule.model_validate(flow["schedule"])
    except ValidationError as exc:
        log.warning("flow has an invalid schedule; skipped",
                    extra={"flow_id": str(flow_id), "error": str(exc)[:300]})
        return []
    if checked_until >= now:
        return []
    decision = plan(schedule, due_times(schedule, checked_until, now), now,
                    catch_up_limit=catch_up_limit)
    created = []
    for at in decision.run_at:
        run, new = repository.create_run(conn, flow_id, {"scheduled_for": at.isoformat()},
                                         trigger="schedule", scheduled_for=at)
        if new:
            created.append((flow_id, at))
            log.info("scheduled run created", extra={
                "flow_id": str(flow_id), "run_id": str(run["id"]), "scheduled_for": at.isoformat()})
    if decision.skipped:
        log.info("missed schedule times skipped", extra={
            "flow_id": str(flow_id), "count": len(decision.skipped),
            "first": decision.skipped[0].isoformat(), "last": decision.skipped[-1].isoformat()})
    conn.execute(sa.update(flows).where(flows.c.id == flow_id)
                 .values(schedule_checked_until=now))
    return created
