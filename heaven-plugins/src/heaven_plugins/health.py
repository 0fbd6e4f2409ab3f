"""/health (readiness: can this process serve requests now?) and /health/live (liveness: is it running at all?)."""

import asyncio
import logging
import signal
import threading

from heaven.context import Key
from msgspec import Struct

from .docs import documented
from .postgres import RETRY_AFTER, postgres_of
from .web import public, send

log = logging.getLogger(__name__)

# Set on the app from the SIGTERM that begins a drain (Health(drain=...)): /health answers 503 from then on.
DRAINING: Key[bool] = Key("heaven_plugins.health.draining")

# /health answers within a second, whatever the pool does: a probe that takes longer counts as no answer.
WITHIN = 0.8


class Readiness(Struct):
    """Whether the service can serve requests, and what its database answers (GET /health)."""

    # ok, degraded (read-only: reads work), busy (the pool is exhausted), unavailable, or draining (stopping: a
    # proxy should send no more requests)
    status: str
    database: str  # ok, read_only or unreachable
    # With several hosts in DATABASE_URL or read replicas only: host:port of the primary as last reached,
    # and each replica.
    primary: str | None = None
    replicas: list["ReplicaHealth"] = []


class ReplicaHealth(Struct):
    """One read replica: where, whether it takes reads now, how far behind it is."""

    replica: str  # host:port/database
    status: str  # ok, lagging (beyond the bound: the primary reads instead) or down
    lag: float | None  # seconds behind the primary, as of the last look; None when unknown


class Live(Struct):
    """The process is up."""

    status: str


@public
@documented(responses={200: Readiness, 503: Readiness})
async def check_health(req, res, ctx):
    """Readiness: 200 while Postgres answers (`degraded` when it is read-only, as reads still work);
    503 when it does not (`unavailable`) or when every pool connection is taken and requests are
    refused (`busy`), or once the process was told to stop (`draining`). Asked over a connection of its own,
    so it never waits behind requests."""
    db = postgres_of(req.app)
    database = await db.check(WITHIN)
    topology = db.topology()
    if req.app.peek(DRAINING):
        send(res, {"status": "draining", "database": database, **topology}, 503)
        res.headers = "Retry-After", str(RETRY_AFTER)
    elif database == "unreachable" or db.busy:
        status = "unavailable" if database == "unreachable" else "busy"
        send(res, {"status": status, "database": database, **topology}, 503)
        res.headers = "Retry-After", str(RETRY_AFTER)
    else:
        send(res, {"status": "degraded" if database == "read_only" else "ok", "database": database, **topology})


@public  # probes and load balancers call these without signing in
@documented(responses={200: Live})
async def check_live(req, res, ctx):
    """Liveness: 200 while the process serves at all. It never touches the database: restarting the
    service cures no database outage."""
    send(res, {"status": "ok"})


class Health:
    """The health routes, and a drain: `app.plugin(Health(drain=3))`.

    With `drain` seconds, SIGTERM first turns /health to 503 `draining` while the process goes on serving,
    and only `drain` seconds later reaches uvicorn, which then closes its listener, lets the requests in
    flight finish and stops. A proxy that checks /health (or a readiness probe) thereby stops sending
    requests before any is refused: make `drain` longer than the time it takes to mark a server down
    (its check interval times the failed checks it needs). A second SIGTERM, or SIGINT, stops at once.
    Without `drain` (0, the default), SIGTERM stops as uvicorn does: the listener closes at once.
    """

    def __init__(self, drain: float = 0.0) -> None:
        if drain < 0:
            raise ValueError("drain is negative")
        self.drain = drain

    def install(self, app) -> None:
        """Register /health and /health/live on `app`, and the drain when there is one."""
        app.GET("/health", check_health)
        app.GET("/health/live", check_live)
        app.keep(DRAINING, False)
        if self.drain:
            app.ON("startup", self._catch_sigterm)

    async def _catch_sigterm(self, app) -> None:
        # uvicorn has put its own handler in place by now (it does before it starts the app) with signal.signal,
        # and restores what was there before once it has stopped; only the main thread can set one.
        stop = signal.getsignal(signal.SIGTERM)
        if not callable(stop) or threading.current_thread() is not threading.main_thread():
            return  # not served by a server that stops on SIGTERM (tests' in-process servers): nothing to delay
        loop = asyncio.get_running_loop()

        def begin(sig, frame) -> None:
            log.warning({"message": "draining", "detail": f"/health answers 503; stopping in {self.drain:g} s"})
            loop.call_later(self.drain, stop, sig, None)

        def on_sigterm(sig, frame) -> None:
            if app.peek(DRAINING):  # told twice: no more waiting
                stop(sig, frame)
                return
            app.keep(DRAINING, True)
            # A signal handler runs between two bytecodes of the loop's own thread: hand the rest to the loop.
            loop.call_soon_threadsafe(begin, sig, frame)

        signal.signal(signal.SIGTERM, on_sigterm)


def install(app) -> None:
    """Register /health and /health/live on `app`, with no drain (`Health` has one)."""
    Health().install(app)
