"""The worker as a real process (`python -m worker`) over PostgreSQL and moto's SQS server."""

from __future__ import annotations

import json
import signal
import time

import sqlalchemy as sa

from flows import repository
from flows.db import runs
from flows.settings import SchedulerSettings, load_settings
from tests.worker.conftest import (
    LEASE_SECONDS,
    make_flow,
    make_run,
    pipe_takes_message,
    run_row,
    running_step,
    status_is,
    step_rows,
    wait_for,
)
from worker.scheduler import tick


def scheduler_settings(database_url, work_queue, **overrides) -> SchedulerSettings:
    return load_settings(SchedulerSettings, database_url=database_url, queue_url=work_queue.url,
                         dead_letter_queue_url=work_queue.dead_letter_url, **overrides)


def test_runs_complete_and_messages_are_deleted(db, target, work_queue, start_worker):
    flow = make_flow(db, [
        {"id": "call", "type": "http", "url": target.url("/echo"), "method": "POST",
         "body": {"name": "{{ input.name }}"}},
        {"id": "shape", "type": "transform", "expression": "{got: steps.call.status}"},
    ])
    run_ids = [make_run(db, flow, work_queue, {"name": f"n{i}"}) for i in range(3)]
    target.routes["/missing"] = lambda handler, count: target.reply(handler, 404, {})
    broken = make_flow(db, [{"id": "call", "type": "http", "url": target.url("/missing")}])
    failing = make_run(db, broken, work_queue)
    worker = start_worker()

    for run_id in run_ids:
        wait_for(status_is(db, run_id, "succeeded"), 30, f"run {run_id} to succeed")
    wait_for(status_is(db, failing, "failed"), 30, "the broken run to fail")
    assert "returned 404" in run_row(db, failing).error
    assert run_row(db, run_ids[0]).output == {"got": 200}
    assert sorted(r.body for r in target.calls("/echo")) == [
        b'{"name":"n0"}', b'{"name":"n1"}', b'{"name":"n2"}']
    wait_for(lambda: work_queue.total() == 0, 10, "the messages to be deleted")
    keys = {r.headers["Idempotency-Key"] for r in target.calls("/echo")}
    assert keys == {f"{run_id}:call" for run_id in run_ids}

    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    outcome = next(o for o in worker.outcomes() if o["run_id"] == str(run_ids[0]))
    assert outcome["status"] == "succeeded"
    assert outcome["flow_id"] == str(flow["id"])
    assert outcome["attempt"] == 1
    assert {"queue_wait_s", "duration_s", "db_ms", "time", "level"} <= set(outcome)


def test_two_workers_racing_for_one_run_execute_it_once(db, target, work_queue, start_worker):
    flow = make_flow(db, [{"id": "call", "type": "http", "url": target.url("/once")}])
    run_id = make_run(db, flow, work_queue)
    # A second message for the same run, as a relay retry or the reaper could send.
    work_queue.client.send_message(QueueUrl=work_queue.url,
                                   MessageBody=f'{{"run_id": "{run_id}"}}')
    workers = [start_worker(), start_worker()]

    wait_for(status_is(db, run_id, "succeeded"), 30, "the run to succeed")
    time.sleep(0.5)  # give the loser time to (wrongly) execute it as well
    assert len(target.calls("/once")) == 1
    assert step_rows(db, run_id)["call"].attempts == 1
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [worker.wait(15) for worker in workers] == [0, 0]
    executed = [o for worker in workers for o in worker.outcomes()]
    assert [o["status"] for o in executed] == ["succeeded"]


def test_killed_worker_run_resumes_after_visibility_timeout(db, target, work_queue,
                                                            start_worker):
    flow = make_flow(db, [
        {"id": "first", "type": "http", "url": target.url("/first")},
        {"id": "slow", "type": "http", "url": target.url("/hang-first"), "timeout_s": 60},
    ])
    run_id = make_run(db, flow, work_queue)
    doomed = start_worker()
    wait_for(lambda: target.calls("/hang-first"), 30, "the slow step to start")

    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    killed_at = time.monotonic()
    rescuer = start_worker()

    wait_for(status_is(db, run_id, "succeeded"), LEASE_SECONDS + 30, "the run to complete")
    assert time.monotonic() - killed_at >= LEASE_SECONDS - 4  # only once the message is back
    assert len(target.calls("/first")) == 1  # the completed step was not repeated
    assert len(target.calls("/hang-first")) == 2
    row = run_row(db, run_id)
    assert row.attempt == 2
    assert row.output["body"] == {"count": 2}
    assert step_rows(db, run_id)["slow"].attempts == 2
    keys = {r.headers["Idempotency-Key"] for r in target.calls("/hang-first")}
    assert keys == {f"{run_id}:slow"}
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait(15) == 0


def test_sigterm_lets_a_short_run_finish(db, target, work_queue, start_worker):
    target.routes["/slowish"] = lambda handler, count: (
        time.sleep(1.5), target.reply(handler, 200, {"done": True}))
    flow = make_flow(db, [{"id": "call", "type": "http", "url": target.url("/slowish")}])
    run_id = make_run(db, flow, work_queue)
    worker = start_worker(worker_drain_seconds=10)
    wait_for(lambda: target.calls("/slowish"), 30, "the step to start")

    stopped_at = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(12) == 0
    assert time.monotonic() - stopped_at < 10
    assert run_row(db, run_id).status == "succeeded"
    assert work_queue.total() == 0


def test_sigterm_releases_a_run_that_does_not_finish_in_time(db, target, work_queue,
                                                            start_worker):
    flow = make_flow(db, [{"id": "slow", "type": "http", "url": target.url("/hang-first"),
                           "timeout_s": 60}])
    run_id = make_run(db, flow, work_queue)
    worker = start_worker(worker_drain_seconds=3)
    wait_for(lambda: target.calls("/hang-first"), 30, "the step to start")

    stopped_at = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    # Released within the 3 s drain; the rest is the interpreter shutting down.
    assert time.monotonic() - stopped_at <= 4.0
    row = run_row(db, run_id)
    assert (row.status, row.lease_owner, row.attempt) == ("queued", None, 1)
    assert [o["status"] for o in worker.outcomes()] == ["released"]
    # The message is visible again at once, not after the visibility timeout.
    assert work_queue.visible() == 1


def test_poison_message_ends_in_dead_letter_queue_and_run_failed(
        db, target, work_queue, start_worker, database_url):
    flow = make_flow(db, [{"id": "crash", "type": "http", "url": target.url("/crash"),
                           "timeout_s": 60}])
    target.routes["/crash"] = lambda handler, count: target.release.wait(120)
    run_id = make_run(db, flow, work_queue)

    def dead_lettered() -> bool:
        return work_queue.total(work_queue.dead_letter_url) == 1

    executions = 0
    while not dead_lettered():
        # Each delivery crashes its worker; SQS counts the receives. A receive that finds
        # the previous lease still live also counts, so the DLQ may come after 2 or 3 crashes.
        worker = start_worker()
        wait_for(lambda n=executions: len(target.calls("/crash")) > n or dead_lettered(),
                 LEASE_SECONDS + 30, f"delivery {executions + 1} or the dead-letter queue")
        worker.signal(signal.SIGKILL)
        worker.wait(10)
        executions = len(target.calls("/crash"))
        assert executions <= 3

    assert executions >= 2
    assert run_row(db, run_id).status == "running"
    report = tick(db, work_queue.client, scheduler_settings(database_url, work_queue,
                                                            scheduler_max_attempts=5))
    assert report["dead_lettered"] == 1
    row = run_row(db, run_id)
    assert row.status == "failed"
    assert row.error.startswith("dead-lettered: every delivery of this run's message ended")
    assert work_queue.total(work_queue.dead_letter_url) == 0


def test_expired_lease_is_reaped_and_the_stale_workers_write_is_rejected(
        db, target, work_queue, start_worker, database_url):
    flow = make_flow(db, [{"id": "slow", "type": "http", "url": target.url("/hang-first"),
                           "timeout_s": 60}])
    run_id = make_run(db, flow, work_queue)
    stale = start_worker()
    wait_for(lambda: target.calls("/hang-first"), 30, "the step to start")
    stale.signal(signal.SIGSTOP)  # frozen: no heartbeat, its lease runs out

    wait_for(lambda: run_row(db, run_id).lease_expires_at < _db_now(db), LEASE_SECONDS + 5,
             "the lease to expire")
    settings = scheduler_settings(database_url, work_queue)
    report = tick(db, work_queue.client, settings)
    assert report["lease_expired"] == 1
    assert (run_row(db, run_id).status, run_row(db, run_id).attempt) == ("queued", 2)
    rescuer = start_worker()
    wait_for(status_is(db, run_id, "succeeded"), 30, "the reaped run to complete")

    target.release.set()  # the stale worker's request now gets its answer ...
    stale.signal(signal.SIGCONT)  # ... and it tries to write its result
    wait_for(lambda: any(o["run_id"] == str(run_id) for o in stale.outcomes()), 15,
             "the stale worker to give up")
    assert [o["status"] for o in stale.outcomes()] == ["lease_lost"]
    row = run_row(db, run_id)
    assert (row.status, row.attempt, row.output["body"]) == ("succeeded", 2, {"count": 2})
    for worker in (stale, rescuer):
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0


def test_single_run_task_killed_after_pipe_deleted_message_is_brought_back(
        db, target, work_queue, start_worker, database_url):
    flow = make_flow(db, [{"id": "slow", "type": "http", "url": target.url("/hang-first"),
                           "timeout_s": 60}])
    run_id = make_run(db, flow, work_queue)
    pipe_takes_message(work_queue)  # the pipe started a task for it and deleted the message
    task = start_worker("--run-id", str(run_id))
    wait_for(lambda: target.calls("/hang-first"), 30, "the step to start")
    task.signal(signal.SIGKILL)  # a Spot interruption without a drain
    task.wait(10)
    assert work_queue.total() == 0  # nothing in SQS remembers this run

    settings = scheduler_settings(database_url, work_queue)
    wait_for(lambda: tick(db, work_queue.client, settings)["lease_expired"] == 1,
             LEASE_SECONDS + 5, "the reaper to requeue the run", interval=0.5)
    assert work_queue.total() == 1
    worker = start_worker()
    wait_for(status_is(db, run_id, "succeeded"), 30, "the run to complete")
    assert run_row(db, run_id).attempt == 2
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0


def test_single_run_mode_executes_its_run_then_lingers_for_the_queue(
        db, target, work_queue, start_worker):
    flow = make_flow(db, [{"id": "call", "type": "http", "url": target.url("/call")}])
    own = make_run(db, flow, work_queue)
    pipe_takes_message(work_queue)
    other = make_run(db, flow, work_queue)
    started = time.monotonic()
    task = start_worker(run_id=str(own), worker_linger_seconds=2)

    assert task.wait(30) == 0
    assert time.monotonic() - started >= 2
    assert run_row(db, own).status == "succeeded"
    assert run_row(db, other).status == "succeeded"  # picked up while lingering
    assert sorted(o["run_id"] for o in task.outcomes()) == sorted([str(own), str(other)])


def test_sigterm_in_single_run_mode_sends_a_new_message(db, target, work_queue, start_worker):
    flow = make_flow(db, [{"id": "slow", "type": "http", "url": target.url("/hang-first"),
                           "timeout_s": 60}])
    run_id = make_run(db, flow, work_queue)
    pipe_takes_message(work_queue)
    task = start_worker(run_id=str(run_id), worker_drain_seconds=2)
    wait_for(lambda: target.calls("/hang-first"), 30, "the step to start")

    task.signal(signal.SIGTERM)
    assert task.wait(10) == 0
    assert run_row(db, run_id).status == "queued"
    assert work_queue.visible() == 1  # released with a new message through the outbox


def test_cancelled_run_stops_before_its_next_step(db, target, work_queue, start_worker):
    flow = make_flow(db, [
        {"id": "wait", "type": "delay", "seconds": 2},
        {"id": "after", "type": "http", "url": target.url("/after")},
    ])
    run_id = make_run(db, flow, work_queue)
    worker = start_worker()
    wait_for(running_step(db, run_id, "wait"), 30, "the delay step to start")
    with db.begin() as conn:
        repository.cancel_run(conn, run_id)

    wait_for(lambda: any(o["run_id"] == str(run_id) for o in worker.outcomes()), 15,
             "the worker to notice the cancel")
    assert target.calls("/after") == []
    assert run_row(db, run_id).status == "cancelled"
    assert "after" not in step_rows(db, run_id)
    assert [o["status"] for o in worker.outcomes()] == ["cancelled"]
    wait_for(lambda: work_queue.total() == 0, 10, "the message to be deleted")
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0


def test_ecs_task_protection_follows_work(db, target, work_queue, start_worker):
    def agent(handler, count):
        enabled = json.loads(target.calls("/task-protection/v1/state")[count - 1].body)
        target.reply(handler, 200, {"protection": enabled})

    def agent_calls():
        return [json.loads(r.body) for r in target.calls("/task-protection/v1/state")]

    target.routes["/task-protection/v1/state"] = agent
    flow = make_flow(db, [{"id": "wait", "type": "delay", "seconds": 1}])
    run_id = make_run(db, flow, work_queue)
    worker = start_worker(ecs_agent_uri=target.url(""))

    wait_for(status_is(db, run_id, "succeeded"), 30, "the run to succeed")
    wait_for(lambda: len(agent_calls()) >= 2, 10, "protection to be turned off")
    assert agent_calls() == [{"ProtectionEnabled": True, "ExpiresInMinutes": 60},
                             {"ProtectionEnabled": False}]
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0


def _db_now(engine: sa.Engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.now())).scalar()


def test_message_for_a_finished_run_is_deleted_without_executing(db, target, work_queue,
                                                               start_worker):
    flow = make_flow(db, [{"id": "call", "type": "http", "url": target.url("/never")}])
    run_id = make_run(db, flow, work_queue)
    with db.begin() as conn:
        conn.execute(sa.update(runs).where(runs.c.id == run_id).values(status="succeeded"))
    worker = start_worker()
    wait_for(lambda: work_queue.total() == 0, 15, "the message to be deleted")
    assert target.calls("/never") == []
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0


def test_cancel_stops_a_long_step_at_the_next_heartbeat(db, work_queue, start_worker):
    flow = make_flow(db, [{"id": "wait", "type": "delay", "seconds": 600}])
    run_id = make_run(db, flow, work_queue)
    worker = start_worker()
    wait_for(running_step(db, run_id, "wait"), 30, "the delay step to start")
    with db.begin() as conn:
        repository.cancel_run(conn, run_id)

    # The heartbeat runs every third of the lease and stops the step when the lease is gone.
    wait_for(lambda: worker.outcomes(), LEASE_SECONDS / 3 + 5, "the step to be stopped")
    assert [o["status"] for o in worker.outcomes()] == ["cancelled"]
    assert run_row(db, run_id).status == "cancelled"
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0


def test_bad_settings_stop_the_worker_naming_the_variables(start_worker):
    worker = start_worker(queue_url="", worker_concurrency="0", database_url="")
    assert worker.wait(30) == 2
    text = worker.text()
    assert "QUEUE_URL" in text and "WORKER_CONCURRENCY" in text
    assert "no database configured: set DATABASE_URL" in text


def test_a_run_id_that_is_not_a_uuid_is_refused(start_worker):
    worker = start_worker("--run-id", "nope")
    assert worker.wait(30) == 2
    assert "RUN_ID: 'nope' is not a UUID" in worker.text()
