"""The Postgres plugin's face: the pool's lifecycle, the handle on each request's context, its queries and
transactions, and how its errors are answered."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
from heaven.context import Key

from . import answers
from .connection import Connection, changes_session
from .errors import ADRIFT, UNAVAILABLE, describe, explain
from .hosts import Hosts, one_host_each
from .keepalive import keep_alive
from .outage import Outages
from .pool import Lender, StuckResets
from .queries import Queries, Querying
from .quiet import quiet_floor
from .replicas import WRITES, Replica, ReplicaReads, Replicas, read_after, remembering_after, remembering_writes
from .watch import Watch

# The package's one logger, whichever module speaks: "heaven_plugins.postgres".
log = logging.getLogger(__package__)

CLOSE_TIMEOUT = 2.0  # seconds shutdown waits for the pool to close before it terminates the connections

# Where the plugin puts itself on each request's context, by default: `ctx.peek(DB)` (typed), or `ctx.db`.
# `Postgres(..., name=...)` picks another name; a project then makes its own Key of that name.
DB: Key["Postgres"] = Key("db")
# Where it keeps itself on the app whatever its name, for the plugins that use it: `postgres_of(app)`.
PLUGIN = "heaven_plugins.postgres"


def postgres_of(app) -> "Postgres":
    """The Postgres plugin installed on `app` (sign-in, health and metrics ask for it this way)."""
    return app.peek(PLUGIN)


class Postgres(Querying):
    """The plugin: `app.plugin(Postgres(dsn))` opens a pool at startup, closes it at shutdown, and
    puts itself on the app (`app.peek(name)`) and on every request's context (`ctx.<name>`).

    Each query method borrows a connection for that query alone; `connection()` and `transaction()`
    hold one for a block. A connection goes back to the pool without a reset unless its session may
    have changed (Connection): run a statement that sets session state in such a block.

    When the database cannot be reached they raise DatabaseUnavailable, and DatabaseReadOnly for a
    write the server refuses as read-only: the app answers both with a 503 and Retry-After, and a
    unique violation (asyncpg.UniqueViolationError) with a 409 naming the field (answers.py).

    `dsn` may name several hosts (libpq's `h1,h2` with target_session_attrs=read-write): the primary is
    found among them, again after a failover. `replicas` take the reads a handler lets them (`replica(req)`).

    For health checks and metrics: `available` is False from the first sign of an outage until the
    database answers again, `outages` counts the outages begun, `waiting` the requests waiting for a
    connection, `busy` says the pool is exhausted; `check()` asks the database over a connection of
    the plugin's own, never queueing behind requests.
    """

    def __init__(
        self,
        dsn: str,
        *,
        name: str = DB.name,
        min_size: int = 2,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        acquire_timeout: float = 5.0,
        query_timeout: float | None = 10.0,
        statement_cache_size: int = 100,
        tcp_user_timeout: float | None = 10.0,
        replicas: Sequence[str] = (),
        max_replica_lag: float = 5.0,
    ) -> None:
        self.dsn, self.name = dsn, name
        self.pool: asyncpg.Pool | None = None
        self._pool_options = {
            "min_size": min_size,
            "max_size": max_size,
            "timeout": connect_timeout,
            "statement_cache_size": statement_cache_size,
            "init": self._init_connection,
            "connection_class": Connection,
        }
        self._query_timeout = query_timeout
        self._tcp_user_timeout = tcp_user_timeout
        # On each record the plugin logs, as `record.postgres`: which plugin said it (not in the JSON line).
        self._extra = {"postgres": self}
        self._lender = lender = Lender(acquire_timeout, max_size)
        # Its methods kept on the plugin: a query reaches them as it would the plugin's own, no hop between.
        self._acquire, self._give_back, self._release = lender.acquire, lender.give_back, lender.release
        self._drop = lender.drop
        self._stuck_resets = StuckResets(lender)
        self._outages = Outages(describe(dsn), max_size, acquire_timeout, self._extra)
        # Several hosts: each gets its share of connect_timeout (Hosts), the pool's connections and the probe's.
        connect = Hosts(dsn).connect if len(one_host_each(dsn)) > 1 else asyncpg.connect
        self._watch = Watch(dsn, connect_timeout, tcp_user_timeout, self._outages, lender.strays, connect)
        self._outages.on_trouble = self._watch.watch
        self.max_replica_lag = max_replica_lag
        # Read replicas, for the reads a handler lets them serve (replica()); none by default.
        options = dict(self._pool_options)
        self._replicas = Replicas(list(replicas), max_replica_lag, options, self, CLOSE_TIMEOUT) if replicas else None
        if connect is not asyncpg.connect:
            self._pool_options["connect"] = connect

    def replica(self, req) -> Querying:
        """The query methods for reads that a replica may serve, for request `req`:
        `await ctx.db.replica(req).fetch(...)`. Each read goes to the next replica in turn that answers,
        lags at most max_replica_lag seconds and has replayed the writes this client made (the pg_lsn
        cookie, set after each POST, PUT, PATCH or DELETE that succeeded); else to the primary. Without
        replicas this is the plugin itself: the primary, at no cost."""
        if self._replicas is None:
            return self
        return ReplicaReads(self._replicas, read_after(req))

    @property
    def primary(self) -> str | None:
        """host:port of the primary as last reached (of several hosts in the DSN, the one that took writes)."""
        return self._watch.primary

    @property
    def failovers(self) -> int:
        """Times the primary was found at another address than before, since startup."""
        return self._watch.failovers

    @property
    def replicas(self) -> list[Replica]:
        """The read replicas: each one's `where`, `up`, `lag` (seconds) and `reads` served."""
        return self._replicas.replicas if self._replicas is not None else []

    def topology(self) -> dict:
        """For /health, with several hosts in the DSN or read replicas (else {}): the primary's host:port as
        last reached, and each replica's place, status (ok; lagging, beyond max_replica_lag; down) and lag."""
        if self._replicas is None and "," not in describe(self.dsn):
            return {}
        return {"primary": self.primary, "replicas": self._replicas.health() if self._replicas is not None else []}

    @property
    def primary_reads(self) -> int:
        """Reads offered to the replicas (replica()) that the primary served: none fit, or one failed."""
        return self._replicas.primary_reads if self._replicas is not None else 0

    @property
    def available(self) -> bool:
        """False from the first sign of an outage until the database answers again."""
        return self._outages.available

    @property
    def outages(self) -> int:
        """The outages begun (confirmed by a probe) since startup."""
        return self._outages.begun

    @property
    def waiting(self) -> int:
        """Requests waiting now for a connection of the full pool."""
        return len(self._lender.waiting)

    @property
    def busy(self) -> bool:
        """True while requests are refused for want of a free connection: the pool is exhausted
        (every connection held by a slow query, a lock), though the database may answer."""
        return self._outages.exhausted is not None

    def install(self, app) -> None:
        """Register the startup and shutdown hooks on `app`, put the plugin on every request's context,
        and say how its errors are answered: DatabaseUnavailable 503, a unique violation 409, a deadlock or a
        serialization failure 503 (answers.py)."""
        app.ON("startup", self.startup)
        app.ON("shutdown", self.shutdown)
        app.keep(self.name, self)
        app.keep(PLUGIN, self)
        if hasattr(app, "provide"):  # this project's App: the same, without a hook on every request
            app.provide(self.name, self)
            answers.register(app)
            if self._replicas is not None:  # read-your-writes: after each write, where the primary's WAL is
                app.wrap(remembering_writes(self))
            return
        if self._replicas is not None:
            app.AFTER("/*", remembering_after(self), methods=list(WRITES))

        def inject(req, res, ctx):  # not async: Heaven calls a plain hook without a coroutine
            ctx.keep(self.name, self)

        app.BEFORE("/*", inject)

    async def startup(self, app=None) -> None:
        """Open the pool; raises, naming host, port and database but never the password, if it cannot."""
        try:
            loop = asyncio.get_running_loop()
            self.pool = await asyncpg.create_pool(self.dsn, **self._pool_options)
        except Exception as exc:
            raise RuntimeError(f"cannot connect to Postgres at {describe(self.dsn)}: {explain(exc)}") from None
        if self._pool_options["min_size"]:  # the pool has connected: the primary's address, for failovers
            async with self.pool.acquire() as conn:
                self._watch.reached(conn)
        self._lender.open(self.pool, loop)
        self._outages.loop = loop
        self._stuck_resets.start()
        self._watch.start(loop)
        quiet_floor.watch(self)
        log.info("connected to Postgres at %s", describe(self.dsn), extra=self._extra)
        if self._replicas is not None:
            await self._replicas.start()

    async def shutdown(self, app=None) -> None:
        """Close the pool, letting borrowed connections finish their queries first; if it has not
        closed within CLOSE_TIMEOUT seconds (a silent network), terminate its connections."""
        quiet_floor.forget(self)
        self._lender.close()
        self._stuck_resets.stop()
        await self._watch.stop()
        if self._replicas is not None:
            await self._replicas.stop()
        if self.pool is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.pool.close()
            except TimeoutError:
                self.pool.terminate()
                log.warning(
                    "Postgres at %s did not close the pool within %s s: connections terminated",
                    describe(self.dsn),
                    CLOSE_TIMEOUT,
                    extra=self._extra,
                )
            else:
                log.info("disconnected from Postgres at %s", describe(self.dsn), extra=self._extra)
            self.pool = None

    async def check(self, within: float = 0.8) -> str:
        """Ask the database, within `within` seconds, over the plugin's own connection (never waiting
        behind requests for the pool's): "ok", "read_only" (it refuses writes) or "unreachable"."""
        return await self._watch.check(within)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Queries]:
        """Borrow one connection for several statements, outside a transaction."""
        try:
            conn = await self._acquire()
            # Several statements of yours: the connection is reset before it goes back.
            conn.change_session()
            try:
                yield Queries(conn, self._query_timeout)
            except ADRIFT:
                self._drop(conn)
                raise
            finally:
                await self._release(conn)
        except UNAVAILABLE as exc:
            raise self._outages.refuse(exc) from exc

    async def _run(self, method: str, query: str, args: tuple, **options: Any) -> Any:
        # One query on a connection borrowed for it alone: what connection() does, without the
        # context manager and the Queries it allocates, since every request goes through here.
        try:
            conn = await self._acquire()
            try:
                if changes_session(query):
                    conn.change_session()
                return await getattr(conn, method)(query, *args, timeout=self._query_timeout, **options)
            except ADRIFT:
                self._drop(conn)
                raise
            finally:
                if not self._give_back(conn):
                    await self._release(conn)
        except UNAVAILABLE as exc:
            raise self._outages.refuse(exc) from exc

    @contextlib.asynccontextmanager
    async def transaction(self, **options: Any) -> AsyncIterator[Queries]:
        """`async with db.transaction() as tx:` commits when the block ends, rolls back if it raises.

        options go to asyncpg's `Connection.transaction` (isolation, readonly, deferrable).
        """
        async with self.connection() as queries:
            transaction = queries._conn.transaction(**options)
            # asyncpg runs BEGIN, COMMIT and ROLLBACK without a timeout: each gets the query timeout here.
            async with asyncio.timeout(self._query_timeout):
                await transaction.start()
            try:
                yield queries
            except BaseException as exc:
                if not isinstance(exc, ADRIFT):  # else the connection is terminated, which rolls back
                    async with asyncio.timeout(self._query_timeout):
                        await transaction.rollback()
                raise
            async with asyncio.timeout(self._query_timeout):
                await transaction.commit()

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        keep_alive(conn, self._tcp_user_timeout)

    def _floor_failed(self, exc: BaseException) -> None:
        # Told by the quiet filter on asyncpg's pool logger (quiet.py): the pool failed to reconnect.
        self._watch.floor_failed(exc)
