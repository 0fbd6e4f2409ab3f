"""The worker: a process of its own that runs the queue's jobs, tries a failing one again later, holds one that
keeps failing, and stops on SIGTERM once the jobs in hand are done."""

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pgqueuer
from pgqueuer import AsyncpgDriver, DatabaseRetryEntrypointExecutor, QueueManager
from pgqueuer.queries import Queries

from ..postgres import describe

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """What PgQueuer is told of a handler's failure: its type and where it was raised, never its message."""


class Job(msgspec.Struct, frozen=True):
    """A job as its handler gets it: `payload` decoded from the JSON it was enqueued with, `attempt` counting
    from 1, and `db`, the worker's pool of connections for the handler's own queries."""

    id: int
    name: str
    attempt: int
    payload: Any
    db: asyncpg.Pool


Handler = Callable[[Job], Awaitable[None]]


class Worker:
    """Runs the jobs of the queue it shares with the web app (`enqueue`), `concurrency` at a time.

    A job whose handler raises is tried again after `first_retry` seconds, then twice as long each time
    up to `last_retry`, `attempts` times in all; after the last it is held with the status `failed`
    (`pgq failed` lists them, `pgq requeue ID` runs one again), and counted on /metrics.

    A worker that dies mid-job (`kill -9`, a lost node) stops renewing its hold on the job: after
    `heartbeat` seconds another worker takes the job and runs it again. On SIGTERM or SIGINT a worker
    takes no new job and exits once the jobs in hand end; give it longer than the longest job (a
    Kubernetes grace period), or the job runs again elsewhere after `heartbeat` seconds.

    New jobs wake the worker at once (LISTEN/NOTIFY); a retry coming due may wait up to `poll` seconds more.
    """

    def __init__(
        self,
        database_url: str,
        *,
        concurrency: int = 4,
        attempts: int = 5,
        first_retry: float = 1.0,
        last_retry: float = 300.0,
        heartbeat: float = 30.0,
        poll: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts is less than 1")
        self.database_url = database_url
        self.concurrency, self.attempts = concurrency, attempts
        self.first_retry, self.last_retry, self.heartbeat = first_retry, last_retry, heartbeat
        self.poll = poll
        self.connect_timeout = connect_timeout
        self.handlers: dict[str, Handler] = {}
        self.pool: asyncpg.Pool | None = None

    def job(self, name: str, handler: Handler) -> None:
        """Run `handler(job)` for each job named `name`."""
        if name in self.handlers:
            raise ValueError(f"a handler for {name!r} is registered already")
        self.handlers[name] = handler

    async def run(self, shutdown: asyncio.Event | None = None) -> None:
        """Run jobs until SIGTERM or SIGINT (or until `shutdown` is set, when given)."""
        await pgqueuer.run(
            self._manager,
            heartbeat_timeout=timedelta(seconds=self.heartbeat),
            # A NOTIFY at each commit wakes the worker; without one (a retry coming due, a notification
            # missed) the queue is read every `poll` seconds.
            dequeue_timeout=timedelta(seconds=self.poll),
            batch_size=self.concurrency,
            max_concurrent_tasks=2 * self.concurrency,
            shutdown=shutdown,
        )

    @contextlib.asynccontextmanager
    async def _manager(self):
        try:
            conn = await asyncpg.connect(self.database_url, timeout=self.connect_timeout)
            self.pool = await asyncpg.create_pool(
                self.database_url, min_size=1, max_size=self.concurrency, timeout=self.connect_timeout
            )
        except Exception as exc:
            where = describe(self.database_url)
            raise SystemExit(f"cannot connect to Postgres at {where}: {type(exc).__name__}: {exc}") from None
        try:
            manager = QueueManager(Queries(AsyncpgDriver(conn)))
            for name, handler in self.handlers.items():
                manager.entrypoint(name, on_failure="hold", executor_factory=self._executor)(
                    self._runner(name, handler)
                )
            log.info("worker running jobs %s from %s", ", ".join(sorted(self.handlers)), describe(self.database_url))
            yield manager
        finally:
            await self.pool.close()
            await conn.close()
            log.info("worker stopped")

    def _executor(self, parameters) -> DatabaseRetryEntrypointExecutor:
        return DatabaseRetryEntrypointExecutor(
            parameters=parameters,
            max_attempts=self.attempts - 1,  # PgQueuer counts the tries after the first
            initial_delay=timedelta(seconds=self.first_retry),
            max_delay=timedelta(seconds=self.last_retry),
        )

    def _runner(self, name: str, handler: Handler):
        async def run(job) -> None:
            attempt = job.attempts + 1
            payload = msgspec.json.decode(job.payload) if job.payload else None
            started = time.perf_counter()
            try:
                await handler(Job(job.id, name, attempt, payload, self.pool))
            except Exception as exc:
                # The type and where only: a message may quote the payload, which may hold a token or an address.
                # PgQueuer logs what it is given at ERROR and keeps its traceback in pgqueuer_log: it gets the same.
                where = traceback.extract_tb(exc.__traceback__)[-1]
                failure = f"{type(exc).__name__} at {where.filename}:{where.lineno}"
                final = "its last" if attempt >= self.attempts else f"of {self.attempts}"
                log.warning("job %s %s failed (attempt %s, %s): %s", name, job.id, attempt, final, failure)
                raise JobFailed(failure) from None
            log.info("job %s %s done in %.3f s (attempt %s)", name, job.id, time.perf_counter() - started, attempt)

        return run
