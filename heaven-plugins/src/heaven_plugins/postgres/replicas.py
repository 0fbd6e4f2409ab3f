"""Reads that may go to a replica: the replicas' pools taken in turn, skipped while down or lagging, and
read-your-writes through the primary's WAL position carried in a cookie."""

import asyncio
import contextlib
import logging
import math
import re
from typing import TYPE_CHECKING, Any

import asyncpg

from .connection import changes_session
from .errors import ADRIFT, UNAVAILABLE, describe, explain
from .hosts import Hosts, one_host_each
from .keepalive import keep_alive
from .pool import Lender
from .queries import Querying

if TYPE_CHECKING:
    from .plugin import Postgres

# The package's one logger, whichever module speaks: "heaven_plugins.postgres".
log = logging.getLogger(__package__)

# The cookie that carries, from a write to the reads after it, the primary's WAL position once the write
# committed: a replica that has not replayed that far is skipped for those reads.
COOKIE = "pg_lsn"
# Seconds the cookie lasts: far beyond any lag a replica is allowed, after which it would skip none.
COOKIE_SECONDS = 600
# The cookie's value when the position could not be read (the primary just went away): reads go to the primary.
UNKNOWN = "primary"
LAG_INTERVAL = 0.5  # seconds between two looks at each replica's replay
LAG_TIMEOUT = 2.0  # seconds that look may take: a replica that cannot answer it is down
# Where the primary's WAL is, asked after a write; each replica's replay, and its lag in seconds: none while
# it has replayed all it received, else the age of the last transaction it replayed.
WAL_POSITION = "SELECT pg_current_wal_lsn()::text"
REPLAY = """
SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,
       CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END
"""
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def wal_position(text: str | None) -> int:
    """A WAL position as Postgres writes it ("16/B374D848") as a number; -1 for none (not in recovery)."""
    if not text:
        return -1
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def read_after(req) -> float:
    """The WAL position a request's reads must see (its pg_lsn cookie): 0 when it carries none, and
    math.inf, only the primary, when the cookie cannot be read."""
    value = req.cookies.get(COOKIE)
    if value is None:
        return 0
    try:
        return wal_position(value)
    except ValueError:
        return math.inf


# Of a replica naming several hosts, prefer-standby is asked of each host alone, where it takes any server: as
# standby, it takes a standby, and with none the replica is down and the primary reads, which is what it prefers.
PREFER_STANDBY = re.compile(r"(target_session_attrs=)prefer-standby\b")


def connect_for(dsn: str):
    """How a replica's pool and look connect: asyncpg's connect, or for several hosts (libpq's `h1,h2`, with
    target_session_attrs=standby to take a standby among them) each host in turn with its share of the timeout
    (Hosts), as the primary's hosts are: asyncpg alone spends it all on a first host gone silent."""
    if len(one_host_each(dsn)) < 2:
        return asyncpg.connect
    return Hosts(PREFER_STANDBY.sub(r"\1standby", dsn)).connect


class Replica:
    """One replica: its pool, whether it answers, how far it has replayed, how far behind it is."""

    __slots__ = ("connect", "dsn", "lag", "lender", "pool", "prober", "reads", "replayed", "up", "where")

    def __init__(self, dsn: str, lender: Lender) -> None:
        self.dsn, self.where = dsn, describe(dsn)
        self.connect = connect_for(dsn)
        self.lender = lender  # lends the pool's connections, as the primary's are
        self.pool: asyncpg.Pool | None = None
        self.prober: asyncpg.Connection | None = None
        self.up = False  # until a look at its replay finds it answering
        self.lag = math.inf  # seconds, as of the last look
        self.replayed = -1  # the WAL position replayed, as of the last look; -1 once promoted
        self.reads = 0


class Replicas:
    """The replicas of a Postgres plugin: `pick` the next one, in turn, that answers, lags at most `max_lag`
    seconds and has replayed a request's writes; a look every LAG_INTERVAL keeps that known."""

    def __init__(
        self, dsns: list[str], max_lag: float, pool_options: dict, plugin: "Postgres", close_timeout: float
    ) -> None:
        acquire_timeout = plugin._lender._acquire_timeout
        self.replicas = [Replica(dsn, Lender(acquire_timeout, pool_options["max_size"])) for dsn in dsns]
        self._close_timeout = close_timeout
        self.max_lag = max_lag
        self._options = pool_options
        self.plugin = plugin
        self._turn = 0
        self.primary_reads = 0  # reads offered to the replicas that went to the primary
        self._watching: asyncio.Task | None = None

    def health(self) -> list[dict]:
        """Each replica as /health shows it: its place, status (ok; lagging, beyond max_lag; down) and lag."""
        shown = []
        for replica in self.replicas:
            lag = None if replica.lag == math.inf else round(replica.lag, 3)
            fresh = lag is not None and lag <= self.max_lag
            status = "down" if not replica.up else "ok" if fresh else "lagging"
            shown.append({"replica": replica.where, "status": status, "lag": lag})
        return shown

    async def start(self) -> None:
        """Open each replica's pool (empty, if it cannot be reached now) and begin to look at them."""
        for replica in self.replicas:
            options = dict(self._options)
            if replica.connect is not asyncpg.connect:
                options["connect"] = replica.connect
            try:
                replica.pool = await asyncpg.create_pool(replica.dsn, **options)
            except Exception as exc:  # a replica away at startup: the primary serves until it answers
                log.warning("replica %s cannot be reached: %s", replica.where, explain(exc), extra=self.plugin._extra)
                replica.pool = await asyncpg.create_pool(replica.dsn, **{**options, "min_size": 0})
            replica.lender.open(replica.pool, asyncio.get_running_loop())
        await self._look()
        self._watching = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        """Stop looking and close the pools, as the plugin's own (within its close timeout)."""
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        for replica in self.replicas:
            replica.lender.close()
            if replica.prober is not None:
                replica.prober.terminate()
            if replica.pool is not None:
                try:
                    async with asyncio.timeout(self._close_timeout):
                        await replica.pool.close()
                except TimeoutError:
                    replica.pool.terminate()

    def pick(self, after: float) -> Replica | None:
        """The next replica in turn that answers, lags at most max_lag and has replayed `after`; None: the primary."""
        count = len(self.replicas)
        for i in range(count):
            replica = self.replicas[(self._turn + i) % count]
            if replica.up and replica.lag <= self.max_lag and (replica.replayed >= after or replica.replayed < 0):
                self._turn = (self._turn + i + 1) % count
                return replica
        return None

    def down(self, replica: Replica, exc: BaseException) -> None:
        if replica.up:
            replica.up = False
            log.warning(
                "replica %s is down: %s; its reads go to the primary until it answers",
                replica.where,
                explain(exc),
                extra=self.plugin._extra,
            )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(LAG_INTERVAL)
            await self._look()

    async def _look(self) -> None:
        await asyncio.gather(*(self._look_at(replica) for replica in self.replicas))

    async def _look_at(self, replica: Replica) -> None:
        try:
            if replica.prober is None or replica.prober.is_closed():
                replica.prober = None
                prober = await replica.connect(replica.dsn, timeout=LAG_TIMEOUT, statement_cache_size=0)
                keep_alive(prober, self.plugin._tcp_user_timeout)
                replica.prober = prober
            in_recovery, replayed, lag = await replica.prober.fetchrow(REPLAY, timeout=LAG_TIMEOUT)
        except (Exception, asyncio.CancelledError) as exc:
            if replica.prober is not None:
                replica.prober.terminate()
                replica.prober = None
            if isinstance(exc, asyncio.CancelledError):
                raise
            self.down(replica, exc)
            return
        replica.replayed = wal_position(replayed) if in_recovery else -1
        replica.lag = math.inf if lag is None else float(lag)
        if not replica.up:
            replica.up = True
            log.info("replica %s answers; lag %.1f s", replica.where, replica.lag, extra=self.plugin._extra)


class ReplicaReads(Querying):
    """fetch, fetchrow, fetchval (and execute, for a read) on a replica that may serve them (Replicas.pick),
    for one request: `db.replica(req)`."""

    __slots__ = ("_after", "_replicas")

    def __init__(self, replicas: Replicas, after: float) -> None:
        self._replicas, self._after = replicas, after

    async def _run(self, method: str, query: str, args: tuple, **options: Any) -> Any:
        # One read on a replica that may serve it, else, or when it fails to, on the primary. As the primary's
        # reads (Postgres._run), in one coroutine, lent by a Lender, which arms no timer while a connection is
        # free: an asyncio.timeout around the acquire cost 25k instructions a read, two coroutines more about 5k
        # (callgrind, bench/replica.py).
        replicas = self._replicas
        replica = replicas.pick(self._after)
        if replica is not None:
            lender = replica.lender
            try:
                conn = await lender.acquire()
                try:
                    if changes_session(query):
                        conn.change_session()
                    timeout = replicas.plugin._query_timeout
                    result = await getattr(conn, method)(query, *args, timeout=timeout, **options)
                except ADRIFT:
                    lender.drop(conn)
                    raise
                finally:
                    if not lender.give_back(conn):
                        await lender.release(conn)
                replica.reads += 1
                return result
            except UNAVAILABLE as exc:
                replicas.down(replica, exc)
            except asyncpg.TransactionRollbackError:
                pass  # "canceling statement due to conflict with recovery": a replica's hazard, not the read's
        replicas.primary_reads += 1
        return await replicas.plugin._run(method, query, args, **options)


async def wal_cookie(plugin: "Postgres") -> bytes:
    """The pg_lsn cookie after a write that succeeded: where the primary's WAL is, for the reads after it."""
    try:
        position = await plugin.fetchval(WAL_POSITION)
    except Exception:  # the write is done and answered: its reads go to the primary for a while instead
        position = UNKNOWN
    return f"{COOKIE}={position}; Max-Age={COOKIE_SECONDS}; Path=/; HttpOnly; SameSite=Lax".encode()


def remembering_writes(plugin: "Postgres"):
    """The App's layer (App.wrap) that sets the pg_lsn cookie on each write's answer below 400. A layer, not an
    AFTER hook: any AFTER hook has Heaven look hooks up on every request, 13k instructions each GET."""

    def layer(serve):
        async def remember(scope, receive, send):
            if scope["type"] != "http" or scope["method"] not in WRITES:
                return await serve(scope, receive, send)

            async def send_with_cookie(message):
                if message["type"] == "http.response.start" and message["status"] < 400:
                    cookie = (b"set-cookie", await wal_cookie(plugin))
                    message = {**message, "headers": [*message.get("headers", ()), cookie]}
                await send(message)

            return await serve(scope, receive, send_with_cookie)

        return remember

    return layer


def remembering_after(plugin: "Postgres"):
    """The same as a Heaven AFTER hook, for an app that is not this project's App."""

    async def remember(req, res, ctx):
        if res.status < 400:
            res.headers = "Set-Cookie", (await wal_cookie(plugin)).decode()

    return remember
