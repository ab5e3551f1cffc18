"""The scheduler: due times across DST, `missed` policies, overlapping passes, the handler."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from flows.db import flows, runs
from flows.models import Schedule
from flows.schedules import create_due_runs, due_times, plan
from tests.worker.conftest import make_flow, run_row, wait_for
from worker import scheduler


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_time_stays_at_local_time_across_spring_forward():
    daily = Schedule(cron="0 9 * * *", timezone="Europe/Berlin")
    # Berlin moves from UTC+1 to UTC+2 on 2026-03-29.
    assert due_times(daily, utc(2026, 3, 27), utc(2026, 3, 31)) == [
        utc(2026, 3, 27, 8), utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)]


def test_a_time_inside_the_spring_gap_runs_once_after_it():
    nightly = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    # 02:30 does not exist on 2026-03-29; it runs at 03:30 CEST (01:30 UTC), once.
    assert due_times(nightly, utc(2026, 3, 28, 12), utc(2026, 3, 29, 12)) == [
        utc(2026, 3, 29, 1, 30)]
    hourly = Schedule(cron="30 * * * *", timezone="Europe/Berlin")
    assert due_times(hourly, utc(2026, 3, 29, 0), utc(2026, 3, 29, 3)) == [
        utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 30)]


def test_a_repeated_time_in_the_fall_back_hour_runs_once():
    nightly = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    # 02:30 happens twice on 2026-10-25 (CEST, then CET): one run, at the first.
    assert due_times(nightly, utc(2026, 10, 24, 12), utc(2026, 10, 25, 12)) == [
        utc(2026, 10, 25, 0, 30)]


def test_us_eastern_change_keeps_nine_o_clock():
    daily = Schedule(cron="0 9 * * *", timezone="America/New_York")
    assert due_times(daily, utc(2026, 3, 7), utc(2026, 3, 10)) == [
        utc(2026, 3, 7, 14), utc(2026, 3, 8, 13), utc(2026, 3, 9, 13)]


def test_missed_skip_runs_only_on_time_due_times():
    hourly = Schedule(cron="0 * * * *", missed="skip")
    now = utc(2026, 5, 1, 12, 2)
    due = due_times(hourly, utc(2026, 5, 1, 8, 30), now)
    decision = plan(hourly, due, now)
    assert decision.run_at == (utc(2026, 5, 1, 12),)
    assert decision.skipped == (utc(2026, 5, 1, 9), utc(2026, 5, 1, 10), utc(2026, 5, 1, 11))


def test_missed_run_once_runs_one_stand_in_for_all_missed_times():
    hourly = Schedule(cron="0 * * * *", missed="run_once")
    now = utc(2026, 5, 1, 11, 40)  # down since 08:30: 09, 10 and 11 o'clock were missed
    decision = plan(hourly, due_times(hourly, utc(2026, 5, 1, 8, 30), now), now)
    assert decision.run_at == (utc(2026, 5, 1, 11),)
    assert decision.skipped == (utc(2026, 5, 1, 9), utc(2026, 5, 1, 10))
    skip = hourly.model_copy(update={"missed": "skip"})
    assert plan(skip, due_times(skip, utc(2026, 5, 1, 8, 30), now), now).run_at == ()


def set_checked_until(engine, flow_id, at):
    with engine.begin() as conn:
        conn.execute(sa.update(flows).where(flows.c.id == flow_id)
                     .values(schedule_checked_until=at))


def scheduled_runs(engine, flow_id):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(runs.c.scheduled_for, runs.c.trigger, runs.c.input)
            .where(runs.c.flow_id == flow_id).order_by(runs.c.scheduled_for)
        ).all()


STEP = [{"id": "a", "type": "transform", "expression": "input"}]


def test_two_overlapping_passes_create_one_run(db):
    flow = make_flow(db, STEP, {"cron": "*/5 * * * *"})
    set_checked_until(db, flow["id"], utc(2026, 5, 1, 11, 58))
    now = utc(2026, 5, 1, 12, 0, 30)
    barrier = threading.Barrier(4)
    created = []

    def one_pass():
        barrier.wait()
        created.extend(create_due_runs(db, now=now))

    threads = [threading.Thread(target=one_pass) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert created == [(flow["id"], utc(2026, 5, 1, 12))]
    rows = scheduled_runs(db, flow["id"])
    assert [(r.scheduled_for, r.trigger) for r in rows] == [(utc(2026, 5, 1, 12), "schedule")]
    assert rows[0].input == {"scheduled_for": "2026-05-01T12:00:00+00:00"}
    # The next pass finds nothing new: the flow's place moved to `now`.
    assert create_due_runs(db, now=now + timedelta(seconds=30)) == []


def test_the_unique_constraint_stops_a_second_run_for_the_same_time(db):
    flow = make_flow(db, STEP, {"cron": "0 12 * * *"})
    set_checked_until(db, flow["id"], utc(2026, 5, 1, 11))
    assert len(create_due_runs(db, now=utc(2026, 5, 1, 12, 1))) == 1
    # As if the flow's place were lost: the same time comes due again, and is refused.
    set_checked_until(db, flow["id"], utc(2026, 5, 1, 11))
    assert create_due_runs(db, now=utc(2026, 5, 1, 12, 1)) == []
    assert len(scheduled_runs(db, flow["id"])) == 1


@pytest.mark.parametrize(("missed", "expected"), [
    ("skip", []),
    ("run_once", [utc(2026, 5, 1, 11)]),
])
def test_missed_policy_after_downtime(db, missed, expected):
    flow = make_flow(db, STEP, {"cron": "0 * * * *", "missed": missed})
    set_checked_until(db, flow["id"], utc(2026, 5, 1, 8, 30))
    create_due_runs(db, now=utc(2026, 5, 1, 11, 40))
    assert [r.scheduled_for for r in scheduled_runs(db, flow["id"])] == expected


def test_disabled_and_deleted_flows_are_not_scheduled(db):
    disabled = make_flow(db, STEP, {"cron": "* * * * *"})
    deleted = make_flow(db, STEP, {"cron": "* * * * *"})
    with db.begin() as conn:
        conn.execute(sa.update(flows).where(flows.c.id == disabled["id"]).values(enabled=False))
        conn.execute(sa.update(flows).where(flows.c.id == deleted["id"])
                     .values(deleted_at=sa.func.now()))
    for flow in (disabled, deleted):
        set_checked_until(db, flow["id"], utc(2026, 5, 1, 11))
    assert create_due_runs(db, now=utc(2026, 5, 1, 11, 3)) == []


def test_a_dst_day_in_the_database(db):
    flow = make_flow(db, STEP, {"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    set_checked_until(db, flow["id"], utc(2026, 3, 29, 1, 0))
    assert create_due_runs(db, now=utc(2026, 3, 29, 1, 31)) == [
        (flow["id"], utc(2026, 3, 29, 1, 30))]


def test_handler_runs_a_pass_and_relays_the_new_run(db, database_url, work_queue,
                                                    monkeypatch):
    flow = make_flow(db, STEP, {"cron": "* * * * *"})
    set_checked_until(db, flow["id"], datetime.now(UTC) - timedelta(seconds=90))
    for name, value in {"DATABASE_URL": database_url, "QUEUE_URL": work_queue.url,
                        "DEAD_LETTER_QUEUE_URL": work_queue.dead_letter_url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(scheduler, "_lambda_state", None)

    report = scheduler.handler({}, None)
    assert report["scheduled"] == 1
    assert report["relayed"] == 1
    message = work_queue.client.receive_message(QueueUrl=work_queue.url)["Messages"][0]
    run_id = json.loads(message["Body"])["run_id"]
    assert run_row(db, run_id).trigger == "schedule"
    monkeypatch.setattr(scheduler, "_lambda_state", None)


def test_scheduler_command_once_exits_zero(db, work_queue, start_worker):
    flow = make_flow(db, STEP, {"cron": "* * * * *"})
    set_checked_until(db, flow["id"], datetime.now(UTC) - timedelta(seconds=90))
    process = start_worker("--once", module="worker.scheduler")
    assert process.wait(30) == 0
    passes = [line for line in process.lines() if line.get("message") == "scheduler pass"]
    assert passes[0]["scheduled"] == 1 and passes[0]["failed"] == []
    wait_for(lambda: work_queue.total() == 1, 5, "the scheduled run's message")


def test_a_pass_reports_failure_when_the_queue_is_unreachable(db, database_url, monkeypatch):
    import boto3

    from flows.settings import SchedulerSettings, load_settings
    settings = load_settings(SchedulerSettings, database_url=database_url,
                             queue_url="http://127.0.0.1:9/000000000000/nowhere")
    sqs = boto3.client("sqs", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    flow = make_flow(db, STEP, {"cron": "* * * * *"})
    set_checked_until(db, flow["id"], datetime.now(UTC) - timedelta(seconds=90))
    with pytest.raises(scheduler.SchedulerPassError, match="scheduler pass failed in: relayed"):
        scheduler.tick(db, sqs, settings)
    # The run exists and waits in the outbox for the next pass.
    assert len(scheduled_runs(db, flow["id"])) == 1
