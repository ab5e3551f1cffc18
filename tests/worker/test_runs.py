"""Run state transitions (claim, fencing, cancel, reaper) and step execution, on PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
import sqlalchemy as sa

from flows import repository, runs
from flows.db import outbox
from flows.db import runs as runs_table
from flows.models import RunStatus
from flows.runs import ClaimRefused, Lease, LeaseLostError
from tests.worker.conftest import TargetServer, make_flow, make_run, run_row, step_rows
from worker.execution import Database, RunExecutor, RunState, backoff_delay


def claim(engine, run_id, owner=None, lease_seconds=10.0):
    with engine.begin() as conn:
        return runs.claim(conn, run_id, owner or runs.new_owner(), lease_seconds)


def expire(engine, run_id):
    """Move the lease expiry into the past (instead of waiting for it)."""
    with engine.begin() as conn:
        conn.execute(sa.update(runs_table).where(runs_table.c.id == run_id).values(
            lease_expires_at=sa.func.now() - sa.text("interval '1 second'")))


def outbox_run_ids(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(outbox.c.run_id)).scalars().all()


@pytest.fixture
def flow(db):
    return make_flow(db, [{"id": "a", "type": "transform", "expression": "input.x"}])


def test_concurrent_claims_give_the_run_to_exactly_one_worker(db, flow):
    run_id = make_run(db, flow)
    barrier = threading.Barrier(8)
    results = []

    def contender():
        barrier.wait()
        results.append(claim(db, run_id))

    threads = [threading.Thread(target=contender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [r for r in results if isinstance(r, Lease)]
    assert len(winners) == 1
    assert {r.reason for r in results if isinstance(r, ClaimRefused)} == {
        "leased by another worker"}
    assert run_row(db, run_id).lease_owner == winners[0].owner


def test_claim_refuses_finished_and_unknown_runs(db, flow):
    run_id = make_run(db, flow)
    with db.begin() as conn:
        repository.cancel_run(conn, run_id)
    assert claim(db, run_id) == ClaimRefused("already cancelled", "cancelled")
    assert claim(db, uuid.uuid4()).reason == "no such run"


def test_a_live_lease_refusal_says_when_to_look_again(db, flow):
    run_id = make_run(db, flow)
    claim(db, run_id, lease_seconds=30)
    refused = claim(db, run_id)
    assert refused.status == "running"
    assert 25 < refused.retry_after <= 30


def test_takeover_after_expiry_fences_out_the_old_owner(db, flow):
    run_id = make_run(db, flow)
    old = claim(db, run_id)
    with db.begin() as conn:
        runs.start_step(conn, old, "a", 0)
    expire(db, run_id)

    new = claim(db, run_id)
    assert isinstance(new, Lease) and new.attempt == 2
    assert new.steps["a"]["attempts"] == 1  # the resumed run sees the earlier attempt
    with pytest.raises(LeaseLostError) as caught, db.begin() as conn:
        runs.finish_step(conn, old, "a", succeeded=True, output="stale")
    assert caught.value.status == "running"
    with pytest.raises(LeaseLostError), db.begin() as conn:
        runs.finish_run(conn, old, RunStatus.SUCCEEDED, output="stale")

    with db.begin() as conn:
        runs.finish_step(conn, new, "a", succeeded=True, output="fresh")
        runs.finish_run(conn, new, RunStatus.SUCCEEDED, output="fresh")
    row = run_row(db, run_id)
    assert (row.status, row.output, row.lease_owner) == ("succeeded", "fresh", None)
    assert step_rows(db, run_id)["a"].output == "fresh"


def test_cancel_is_never_overwritten_by_the_worker(db, flow):
    run_id = make_run(db, flow)
    lease = claim(db, run_id)
    with db.begin() as conn:
        repository.cancel_run(conn, run_id)
    with pytest.raises(LeaseLostError) as caught, db.begin() as conn:
        runs.start_step(conn, lease, "a", 0)
    assert caught.value.status == "cancelled"
    with pytest.raises(LeaseLostError), db.begin() as conn:
        runs.finish_run(conn, lease, RunStatus.SUCCEEDED, output=1)
    assert run_row(db, run_id).status == "cancelled"
    assert step_rows(db, run_id) == {}


def test_reaper_requeues_expired_leases_then_fails_the_last_attempt(db, flow):
    run_id = make_run(db, flow)
    with db.begin() as conn:
        conn.execute(sa.delete(outbox))
    claim(db, run_id)
    expire(db, run_id)
    with db.begin() as conn:
        assert runs.reap_expired_leases(conn, max_attempts=2) == ([run_id], [])
    row = run_row(db, run_id)
    assert (row.status, row.attempt, row.lease_owner) == ("queued", 2, None)
    assert outbox_run_ids(db) == [run_id]

    claim(db, run_id)
    expire(db, run_id)
    with db.begin() as conn:
        assert runs.reap_expired_leases(conn, max_attempts=2) == ([], [run_id])
    row = run_row(db, run_id)
    assert row.status == "failed"
    assert row.error == "lease expired: the worker stopped during attempt 2 of 2"


def test_reaper_leaves_live_leases_alone(db, flow):
    run_id = make_run(db, flow)
    claim(db, run_id)
    with db.begin() as conn:
        assert runs.reap_expired_leases(conn, max_attempts=3) == ([], [])
    assert run_row(db, run_id).status == "running"


def test_stale_queued_runs_get_a_new_message_once(db, flow):
    fresh = make_run(db, flow)
    stale = make_run(db, flow)
    with db.begin() as conn:
        conn.execute(sa.delete(outbox))
        conn.execute(sa.update(runs_table).where(runs_table.c.id == stale).values(
            enqueued_at=sa.func.now() - sa.text("interval '20 minutes'")))
        assert runs.requeue_stale_queued(conn, older_than_seconds=900) == [stale]
    # Its outbox row is pending: a second pass does not add another.
    with db.begin() as conn:
        assert runs.requeue_stale_queued(conn, older_than_seconds=900) == []
    assert outbox_run_ids(db) == [stale]
    assert run_row(db, fresh).status == "queued"


def test_dead_lettered_run_fails_unless_a_lease_is_live(db, flow):
    dead = make_run(db, flow)
    alive = make_run(db, flow)
    claim(db, dead)
    expire(db, dead)
    claim(db, alive)
    with db.begin() as conn:
        assert runs.fail_dead_lettered(conn, dead) is True
        assert runs.fail_dead_lettered(conn, alive) is False
    assert run_row(db, dead).status == "failed"
    assert run_row(db, alive).status == "running"


def test_release_clears_the_lease_without_counting_an_attempt(db, flow):
    run_id = make_run(db, flow)
    with db.begin() as conn:
        conn.execute(sa.delete(outbox))
    lease = claim(db, run_id)
    with db.begin() as conn:
        runs.release(conn, lease, send_message=True)
    row = run_row(db, run_id)
    assert (row.status, row.attempt, row.lease_owner) == ("queued", 1, None)
    assert outbox_run_ids(db) == [run_id]


# --- execution ---------------------------------------------------------------------------


def execute(engine, run_id, *, sleeps=None):
    async def fake_sleep(seconds):
        sleeps.append(seconds)

    async def claim_and_execute():
        executor = RunExecutor(Database(engine), allow_private_targets=True,
                               sleep=fake_sleep if sleeps is not None else asyncio.sleep)
        state = RunState()
        claimed = await executor.claim(run_id, runs.new_owner(), 30, state)
        return await executor.execute(claimed, state)

    return asyncio.run(claim_and_execute())


def test_steps_see_input_and_earlier_outputs_and_the_run_keeps_the_last(db):
    flow = make_flow(db, [
        {"id": "double", "type": "transform", "expression": "[input.x, input.x]"},
        {"id": "count", "type": "transform", "expression": "length(steps.double)"},
    ])
    run_id = make_run(db, flow, run_input={"x": 7})
    outcome = execute(db, run_id)
    assert (outcome.status, outcome.output) == ("succeeded", 2)
    row = run_row(db, run_id)
    assert (row.status, row.output, row.lease_owner) == ("succeeded", 2, None)
    steps = step_rows(db, run_id)
    assert steps["double"].output == [7, 7]
    assert [steps[s].status for s in ("double", "count")] == ["succeeded", "succeeded"]


def test_retryable_failures_retry_with_growing_backoff_then_succeed(db, target):
    target.routes["/flaky"] = lambda handler, count: TargetServer.reply(
        handler, 503 if count < 3 else 200, {"count": count})
    flow = make_flow(db, [{"id": "call", "type": "http", "url": target.url("/flaky"),
                           "max_attempts": 3, "backoff_s": 2}])
    run_id = make_run(db, flow)
    sleeps = []
    outcome = execute(db, run_id, sleeps=sleeps)
    assert outcome.status == "succeeded"
    assert len(sleeps) == 2
    assert 1 <= sleeps[0] <= 2 and 2 <= sleeps[1] <= 4  # equal jitter around 2 s, then 4 s
    assert step_rows(db, run_id)["call"].attempts == 3


def test_a_step_out_of_attempts_fails_the_run_with_its_error(db, target):
    target.routes["/down"] = lambda handler, count: TargetServer.reply(handler, 503, {})
    flow = make_flow(db, [{"id": "call", "type": "http", "url": target.url("/down"),
                           "max_attempts": 2, "backoff_s": 0},
                          {"id": "never", "type": "transform", "expression": "`1`"}])
    run_id = make_run(db, flow)
    outcome = execute(db, run_id, sleeps=[])
    row = run_row(db, run_id)
    assert row.status == outcome.status == "failed"
    assert row.error.startswith("step 'call' failed after 2 attempt(s): GET http://127.0.0.1:")
    assert "returned 503" in row.error
    assert step_rows(db, run_id)["call"].status == "failed"
    assert "never" not in step_rows(db, run_id)


def test_a_non_retryable_failure_is_not_retried(db, target):
    target.routes["/bad"] = lambda handler, count: TargetServer.reply(handler, 400, {})
    flow = make_flow(db, [{"id": "call", "type": "http", "url": target.url("/bad"),
                           "max_attempts": 5}])
    run_id = make_run(db, flow)
    sleeps = []
    assert execute(db, run_id, sleeps=sleeps).status == "failed"
    assert sleeps == [] and len(target.calls("/bad")) == 1


def test_step_output_over_the_limit_fails_the_step(db):
    flow = make_flow(db, [{"id": "big", "type": "transform", "expression": "input.blob"}])
    run_id = make_run(db, flow, run_input={"blob": "x" * (64 * 1024)})
    execute(db, run_id)
    row = run_row(db, run_id)
    assert row.status == "failed"
    assert row.error == ("step 'big' failed after 1 attempt(s): step output is 65538 bytes, "
                         "over the limit of 65536 bytes; reduce it with a transform step")


def test_a_resumed_run_skips_completed_steps(db, target):
    flow = make_flow(db, [
        {"id": "first", "type": "http", "url": target.url("/first")},
        {"id": "second", "type": "transform", "expression": "steps.first.body.count"},
    ])
    run_id = make_run(db, flow)
    lease = claim(db, run_id)
    with db.begin() as conn:  # an earlier attempt completed the first step, then died
        runs.start_step(conn, lease, "first", 0)
        runs.finish_step(conn, lease, "first", succeeded=True,
                         output={"status": 200, "body": {"count": 41}})
    expire(db, run_id)
    assert execute(db, run_id).output == 41
    assert target.calls("/first") == []


def test_an_invalid_snapshot_fails_the_run_with_a_reason(db, flow):
    run_id = make_run(db, flow)
    with db.begin() as conn:
        conn.execute(sa.update(runs_table).where(runs_table.c.id == run_id).values(
            flow_snapshot={"steps": [{"id": "x", "type": "teleport"}]}))
    execute(db, run_id)
    row = run_row(db, run_id)
    assert row.status == "failed"
    assert row.error.startswith("the run's flow snapshot is invalid:")


def test_backoff_doubles_and_is_capped():
    samples = [backoff_delay(1.0, n) for n in (1, 2, 3, 20) for _ in range(50)]
    assert all(0.5 <= s <= 1 for s in samples[:50])
    assert all(2 <= s <= 4 for s in samples[100:150])
    assert max(samples[150:]) <= 300 and min(samples[150:]) >= 150
