"""/metrics: requests, latency, requests in flight and the database pool, in Prometheus' text format."""

import asyncio
import contextlib
import os
from bisect import bisect_left
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from .postgres import postgres_of
from .web import public

ROUTE = "/metrics"
# The plugin on its app, `app.peek(PLUGIN)`: other plugins add their own figures to its registry (jobs).
PLUGIN = "metrics"
# No `_created` series beside each counter and histogram: a timestamp per series that dashboards do not use.
disable_created_metrics()
# Latency buckets in seconds: most answers here take a millisecond or two.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Under `uvicorn --workers N` each worker writes its figures to files in this folder, and whichever
# worker is scraped reads them all (prometheus-client's multiprocess mode).
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
FOLD_SECONDS = 1.0  # how often, in that mode, a worker writes its figures for the others to read
UNMATCHED = "unmatched"  # the route label of requests no route matched (404, 405)
# The methods a route label may go with; anything else a client invents is "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


class Metrics:
    """Counts each request in plain dicts, on the request's time (0.2 µs), and folds the counts into
    prometheus-client's metrics only when scraped (and, with several workers, once a second):
    prometheus-client's own labels().inc() and observe() on every request took 3.8 µs (5.5 µs in
    multiprocess mode)."""

    def __init__(self) -> None:
        # With several workers the metrics live in the shared files, read by a registry per scrape.
        registry = None if MULTIPROCESS else CollectorRegistry()
        self.registry = registry
        self.requests = Counter("http_requests", "Requests answered", ["route", "method", "status"], registry=registry)
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer",
            ["route", "method"],
            buckets=BUCKETS,
            registry=registry,
        )

        def gauge(name: str, documentation: str, mode: str = "livesum") -> Gauge:
            # mode: how the workers' values add up in multiprocess mode (those of live workers only).
            return Gauge(name, documentation, multiprocess_mode=mode, registry=registry)

        self.in_flight = gauge("http_requests_in_flight", "Requests being answered")
        self.pool_size = gauge("db_pool_connections", "Connections the pool holds open")
        self.pool_idle = gauge("db_pool_idle_connections", "Open connections no request holds")
        self.pool_waiting = gauge("db_pool_waiting_requests", "Requests waiting for a connection")
        self.available = gauge("db_available", "1 while the database answers, 0 during an outage", "livemin")
        self.outages = Counter("db_outages", "Database outages begun", registry=registry)
        self.topology = Topology(registry)
        if registry is not None:  # what prometheus-client's default registry shows; one process's alone
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        # Per (route, method, status): a count per bucket of BUCKETS, one for +Inf, and the sum of seconds.
        self._stats: dict[tuple[str, str, int], list] = {}
        self._outages_seen = 0
        self._app: Any = None
        self._folding: asyncio.Task | None = None

    def install(self, app) -> None:
        """Count every request `app` answers, serve GET /metrics, and in multiprocess mode share the
        counts once a second."""
        self._app = app
        app.keep(PLUGIN, self)
        app.observe(self.observe)

        @public  # scraped without signing in
        async def get_metrics(req, res, ctx):
            res.status = 200
            res.headers = "Content-Type", CONTENT_TYPE_LATEST
            res.body = self.scrape()

        app.GET(ROUTE, get_metrics, docs=False)
        if MULTIPROCESS:
            app.ON("startup", self.start_folding)
            app.ON("shutdown", self.stop_folding)

    def observe(self, scope: dict, res, route: str | None, seconds: float) -> None:
        method = scope["method"]
        if route is None:
            route = UNMATCHED
            if method not in METHODS:
                method = "other"
        key = (route, method, res.status)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = [0] * (len(BUCKETS) + 1) + [0.0]
        stats[bisect_left(BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds: Prometheus' `le`
        stats[-1] += seconds

    def scrape(self) -> bytes:
        """The text format of every metric; in multiprocess mode, every worker's."""
        self.fold()
        if not MULTIPROCESS:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def fold(self) -> None:
        """Add the counts since the last fold to prometheus-client's metrics, and read the pool."""
        stats, self._stats = self._stats, {}
        for (route, method, status), latency in stats.items():
            self.requests.labels(route, method, str(int(status))).inc(sum(latency[:-1]))
            child = self.latency.labels(route, method)
            # prometheus-client adds one observation at a time; these are the values its observe()
            # adds to (a count per bucket, not yet cumulative, and the sum), given many at once.
            for bucket, count in zip(child._buckets, latency, strict=False):
                if count:
                    bucket.inc(count)
            child._sum.inc(latency[-1])
        self.in_flight.set(self._app.in_flight)
        db = postgres_of(self._app)
        pool = getattr(db, "pool", None)
        self.pool_size.set(pool.get_size() if pool is not None else 0)
        self.pool_idle.set(pool.get_idle_size() if pool is not None else 0)
        self.pool_waiting.set(getattr(db, "waiting", 0))
        self.available.set(1 if getattr(db, "available", pool is not None) else 0)
        outages = getattr(db, "outages", 0)
        if outages > self._outages_seen:
            self.outages.inc(outages - self._outages_seen)
            self._outages_seen = outages
        self.topology.fold(db)

    async def start_folding(self, app=None) -> None:
        """Fold once a second, so that the worker scraped sees the others' counts within a second."""
        self._folding = asyncio.create_task(self._fold_every(FOLD_SECONDS))

    async def stop_folding(self, app=None) -> None:
        """Fold a last time, and take this worker's gauges out of the sums (its counters stay in them)."""
        if self._folding is not None:
            self._folding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._folding
        self.fold()
        multiprocess.mark_process_dead(os.getpid())

    async def _fold_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.fold()


class Topology:
    """Where the database is: failovers counted, the primary's address, each read replica's lag and whether it
    answers, and the reads offered to the replicas by what served them (the replicas, or the primary)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        on = {"registry": registry}
        self.failovers = Counter("db_failovers", "Times the primary was found at another address", **on)
        self.primary = Gauge("db_primary", "1 for the primary's host:port", ["address"], multiprocess_mode="max", **on)
        self.lag = Gauge("db_replica_lag_seconds", "Seconds a replica lags", ["replica"], multiprocess_mode="max", **on)
        self.up = Gauge("db_replica_up", "1 while a replica answers", ["replica"], multiprocess_mode="min", **on)
        self.reads = Counter("db_replica_reads", "Reads a replica may serve, by what served them", ["served_by"], **on)
        self._seen = {"failovers": 0, "primary_reads": 0}  # the plugin's counts at the last fold
        self._replica_reads: dict[str, int] = {}
        self._address: str | None = None

    def fold(self, db: Any) -> None:
        """Add what changed since the last fold."""
        failovers = getattr(db, "failovers", 0)
        if failovers > self._seen["failovers"]:
            self.failovers.inc(failovers - self._seen["failovers"])
            self._seen["failovers"] = failovers
        address = getattr(db, "primary", None)
        if address != self._address:
            self.primary.clear()
            if address is not None:
                self.primary.labels(address).set(1)
            self._address = address
        primary_reads = getattr(db, "primary_reads", 0)
        if primary_reads > self._seen["primary_reads"]:
            self.reads.labels("primary").inc(primary_reads - self._seen["primary_reads"])
            self._seen["primary_reads"] = primary_reads
        for replica in getattr(db, "replicas", ()):
            self.lag.labels(replica.where).set(replica.lag)
            self.up.labels(replica.where).set(1 if replica.up else 0)
            served = replica.reads - self._replica_reads.get(replica.where, 0)
            if served > 0:
                self.reads.labels("replica").inc(served)
                self._replica_reads[replica.where] = replica.reads


def install(app) -> None:
    """Register the metrics plugin on `app`: `app.plugin(metrics)`."""
    Metrics().install(app)
