"""/health (readiness: can this process serve requests now?) and /health/live (liveness: is it running at all?)."""

from msgspec import Struct

from .docs import documented
from .postgres import RETRY_AFTER, postgres_of
from .web import public, send

# /health answers within a second, whatever the pool does: a probe that takes longer counts as no answer.
WITHIN = 0.8


class Health(Struct):
    """Whether the service can serve requests, and what its database answers."""

    status: str  # ok, degraded (read-only: reads work), busy (the pool is exhausted) or unavailable
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
@documented(responses={200: Health, 503: Health})
async def check_health(req, res, ctx):
    """Readiness: 200 while Postgres answers (`degraded` when it is read-only, as reads still work);
    503 when it does not (`unavailable`) or when every pool connection is taken and requests are
    refused (`busy`). Asked over a connection of its own, so it never waits behind requests."""
    db = postgres_of(req.app)
    database = await db.check(WITHIN)
    topology = db.topology()
    if database == "unreachable" or db.busy:
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


def install(app) -> None:
    """Register /health and /health/live on `app`."""
    app.GET("/health", check_health)
    app.GET("/health/live", check_live)
