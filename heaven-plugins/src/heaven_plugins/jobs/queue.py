"""Putting jobs on the queue, in the caller's transaction, and the queue's figures on /metrics."""

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

import msgspec
from pgqueuer.adapters.persistence.qb import QueryQueueBuilder

from ..postgres import postgres_of

log = logging.getLogger(__name__)

# PgQueuer's own INSERT (a row in its queue and one in its log, in one statement), built once: its arrays
# take several jobs at once, here one. Its trigger NOTIFYs the workers, and Postgres delivers a NOTIFY at
# commit only: a rolled-back transaction leaves neither a job nor a wake-up.
ENQUEUE = QueryQueueBuilder().build_enqueue_query("raise")
# What /metrics shows: jobs waiting (of which waiting for a retry), running, and held after their last attempt.
SELECT_FIGURES = """
SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'queued' AND attempts > 0) AS retrying,
       count(*) FILTER (WHERE status = 'picked') AS running,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM pgqueuer
"""
encode = msgspec.json.Encoder().encode


async def enqueue(db, name: str, payload: Any = None, *, delay: float = 0.0, priority: int = 0) -> int:
    """Put job `name` on the queue with `payload` (anything msgspec encodes as JSON); returns its id.

    `db` is what runs the statement: inside `async with postgres.transaction() as tx`, pass `tx`, and
    the job exists only if that transaction commits (no mail for a sign-up that rolled back). A worker
    runs it no sooner than `delay` seconds from now.
    """
    after = timedelta(seconds=delay)
    rows = await db.fetch(ENQUEUE, [priority], [name], [encode(payload)], [after], [None], [None])
    return rows[0]["id"]


class Jobs:
    """The plugin on the web app's side: `app.plugin(Jobs())`. Jobs are put on the queue with
    `enqueue`; workers (`heaven_plugins.jobs.Worker`, a process of their own) run them.

    With the metrics plugin installed too, /metrics shows the queue as the gauges `jobs_queued`,
    `jobs_retrying` (waiting to be tried again after a failure), `jobs_running` and `jobs_failed`
    (every attempt failed: held for a person to look at), read from Postgres every `every` seconds.
    """

    def __init__(self, every: float = 15.0) -> None:
        self.every = every
        self._gauges: dict[str, Any] = {}
        self._reading: asyncio.Task | None = None

    def install(self, app) -> None:
        """Read the queue's figures for /metrics from startup to shutdown, if the metrics plugin is installed."""
        app.ON("startup", self.startup)
        app.ON("shutdown", self.shutdown)

    async def startup(self, app) -> None:
        """Make the gauges and start reading the figures (nothing without the metrics plugin)."""
        from prometheus_client import Gauge

        from ..metrics import PLUGIN

        metrics, db = app.peek(PLUGIN), postgres_of(app)
        if metrics is None or db is None:
            return
        helps = {
            "queued": "Jobs waiting for a worker",
            "retrying": "Jobs waiting to be tried again after a failed attempt",
            "running": "Jobs a worker is running",
            "failed": "Jobs whose every attempt failed, held in the queue",
        }
        for status, documentation in helps.items():
            # Every web process reads the same table: in multiprocess mode, any one's value is the value.
            self._gauges[status] = Gauge(
                f"jobs_{status}", documentation, multiprocess_mode="livemax", registry=metrics.registry
            )
        self._reading = asyncio.create_task(self._read_every(db))

    async def shutdown(self, app) -> None:
        """Stop reading the figures."""
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading

    async def _read_every(self, db) -> None:
        while True:
            try:
                async with asyncio.timeout(self.every):
                    row = await db.fetchrow(SELECT_FIGURES)
            except Exception as exc:  # an outage: the gauges keep their last values, the pool's say why
                log.info("could not read the job queue's figures: %s", type(exc).__name__)
            else:
                for status, gauge in self._gauges.items():
                    gauge.set(row[status])
            await asyncio.sleep(self.every)
