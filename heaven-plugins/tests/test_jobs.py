"""Jobs: enqueued in the caller's transaction, run by a real worker process, tried again, held when they keep
failing, finished on SIGTERM, run again after a kill -9, and counted on /metrics."""

import signal
import time

import httpx
import pytest

from conftest import WorkerProcess, eventually
from heaven_plugins.jobs import enqueue
from heaven_plugins.postgres import Postgres


@pytest.fixture
def worker(migrated, conn, tmp_path):
    """`worker(**settings)`: the test worker, running on the test database; stopped after the test."""
    started: list[WorkerProcess] = []

    def start(**settings) -> WorkerProcess:
        process = WorkerProcess(migrated, tmp_path / f"worker-{len(started)}.log", **settings)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


async def runs(conn, job_id: int, what: str | None = None) -> list:
    sql = "SELECT attempt, what FROM job_runs WHERE job_id = $1 AND ($2::text IS NULL OR what = $2) ORDER BY at"
    return await conn.fetch(sql, job_id, what)


async def test_a_job_in_a_rolled_back_transaction_never_exists(db: Postgres, conn):
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await enqueue(tx, "record", {"n": 1})
            raise RuntimeError("the change failed")
    async with db.transaction() as tx:
        kept = await enqueue(tx, "record", {"n": 2})
    assert [row["id"] for row in await conn.fetch("SELECT id FROM pgqueuer")] == [kept]


async def test_a_worker_runs_a_committed_job(db: Postgres, conn, worker):
    process = worker()
    async with db.transaction() as tx:
        job_id = await enqueue(tx, "record", {"n": 1})
    await eventually(lambda: runs(conn, job_id, "done"), within=10)
    assert [tuple(row) for row in await runs(conn, job_id)] == [(1, "done")]
    assert process.stop() == 0  # SIGTERM with nothing in hand: a clean exit
    assert f"job record {job_id} done" in process.output()


async def test_a_failing_job_is_tried_again_then_held_and_counted(db: Postgres, conn, worker, serve, migrated):
    url = await serve(migrated, jobs_every=0.1)
    process = worker(job_attempts=3, job_first_retry=0.1)
    async with db.transaction() as tx:
        job_id = await enqueue(tx, "fail", {"token": "s3cret-t0ken"})

    async def held():
        return await conn.fetchval("SELECT status FROM pgqueuer WHERE id = $1", job_id) == "failed"

    await eventually(held, within=15)
    assert [row["attempt"] for row in await runs(conn, job_id)] == [1, 2, 3]
    times = [row["at"] for row in await conn.fetch("SELECT at FROM job_runs WHERE job_id = $1 ORDER BY at", job_id)]
    # Backoff: at least 0.1 s before the second attempt, 0.2 s before the third (a worker may find it later).
    assert (times[1] - times[0]).total_seconds() >= 0.1
    assert (times[2] - times[1]).total_seconds() >= 0.2
    # What failed, by type and place, in the worker's log and PgQueuer's; never the message, which quoted the payload.
    assert "RuntimeError at " in process.output() and "s3cret" not in process.output()
    tracebacks = await conn.fetch("SELECT traceback::text FROM pgqueuer_log WHERE job_id = $1", job_id)
    assert any("RuntimeError at " in (row[0] or "") for row in tracebacks), tracebacks
    assert not any("s3cret" in (row[0] or "") for row in tracebacks)

    async with httpx.AsyncClient(base_url=url) as client:

        async def counted():
            metrics = (await client.get("/metrics")).text
            return "jobs_failed 1.0" in metrics and "jobs_queued 0.0" in metrics

        await eventually(counted, within=5)


async def test_sigterm_finishes_the_job_in_hand(db: Postgres, conn, worker):
    process = worker()
    async with db.transaction() as tx:
        job_id = await enqueue(tx, "slow", {"seconds": 1.0})
    await eventually(lambda: runs(conn, job_id, "started"), within=10)
    process.process.send_signal(signal.SIGTERM)
    assert process.stop(timeout=10) == 0, process.output()
    assert [row["what"] for row in await runs(conn, job_id)] == ["started", "done"]
    assert await conn.fetchval("SELECT count(*) FROM pgqueuer") == 0


async def test_a_job_whose_worker_was_killed_runs_again_once(db: Postgres, conn, worker):
    first = worker(job_heartbeat=1)
    async with db.transaction() as tx:
        job_id = await enqueue(tx, "slow", {"seconds": 60})
    await eventually(lambda: runs(conn, job_id, "started"), within=10)
    first.stop(signal.SIGKILL)
    worker(job_heartbeat=1)
    started = time.monotonic()
    await eventually(lambda: runs(conn, job_id, "done"), within=10)
    # A new worker's start and a heartbeat or two, not the 60 s the first run would have taken.
    assert time.monotonic() - started < 30
    # And no third run: a heartbeat more, and the job is gone from the queue, run twice, done once.
    await eventually(lambda: _gone(conn, job_id), within=5)
    assert [row["what"] for row in await runs(conn, job_id)] == ["started", "started", "done"]


async def _gone(conn, job_id: int) -> bool:
    return await conn.fetchval("SELECT count(*) FROM pgqueuer WHERE id = $1", job_id) == 0
