"""The Postgres plugin: the pool's lifecycle, the handle on each request's context, rows bound to Structs,
and bounded, quiet behaviour when the database goes away."""

import asyncio
import contextlib
import functools
import inspect
import logging
import re
import socket
from collections.abc import AsyncIterator, Sequence
from itertools import starmap
from operator import itemgetter
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

import asyncpg
import msgspec
from heaven.context import Key

from .web import HTTPError

log = logging.getLogger(__name__)
S = TypeVar("S", bound=msgspec.Struct)

# The errors that mean "the database is not there right now", as opposed to "this query is wrong".
UNAVAILABLE = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # no connection free within acquire_timeout, or the query ran past query_timeout
    asyncpg.PostgresConnectionError,  # the connection dropped mid-query
    asyncpg.OperatorInterventionError,  # shutting down, starting up, statement cancelled
    asyncpg.InsufficientResourcesError,  # too many connections, out of memory or disk
    asyncpg.InvalidAuthorizationSpecificationError,  # credentials refused (class 28): a password rotated
    asyncpg.ReadOnlySQLTransactionError,  # a write on a read-only server (25006): a failover onto a replica
    # A connection the server dropped mid-query, found in a broken state when the pool resets it on release.
    asyncpg.InternalClientError,
)

# After these a connection may still wait on the network (a query timed out, a request was cancelled,
# the socket failed): it is terminated at once, never reset or cancelled over a network that may not answer.
_ADRIFT = (
    OSError,
    TimeoutError,
    asyncio.CancelledError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# What /health and the outage watch ask, over a connection of their own: "on" on a read-only server.
READ_ONLY = "SELECT current_setting('transaction_read_only')"
# Server processes of connections dropped mid-query, which may still run it or wait on a lock holding a
# connection slot: a cancel request would have stopped them, but it waits on the network too.
TERMINATE_STRAYS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE pid = ANY($1::int[]) AND usename = current_user AND pid <> pg_backend_pid()
"""
MAX_STRAYS = 100
PROBE_TIMEOUT = 2.0  # seconds for that trivial query: a database that cannot answer it is not answering
WATCH_INTERVAL = 0.5  # seconds between probes while an outage is on
SWEEP_INTERVAL = 1.0  # a reset still running at two sweeps in a row is terminated: 1-2 s
LOOP_TURNS = 8  # ... unless it ends within this many turns of the event loop (see _terminate_stuck)
CLOSE_TIMEOUT = 2.0  # seconds shutdown waits for the pool to close before it terminates the connections


# What a statement may leave on its session past its transaction, which the reset query undoes (RESET ALL,
# UNLISTEN *, CLOSE ALL, pg_advisory_unlock_all()): a setting (SET, set_config), a LISTEN, a cursor held open
# (DECLARE), a session's advisory lock, or whatever DO or CALL runs. A word test, not a parser: it errs towards a
# reset (an UPDATE's SET gets one), and a function of yours that sets session state unseen needs db.connection().
SESSION_WORDS = re.compile(r"\b(?:set|set_config|listen|declare|do|call|\w*advisory\w*)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)  # queries are mostly constants: each is read once
def changes_session(query: str) -> bool:
    """Whether `query` may change its session beyond its transaction (SESSION_WORDS)."""
    return SESSION_WORDS.search(query) is not None


class Connection(asyncpg.Connection):
    """asyncpg's connection, given back to the pool without the reset query's round trip unless its
    session may have changed: a query that changes_session(), or a `connection()` block.

    asyncpg resets every connection given back: it rolls back a transaction left open (no round trip
    when there is none), then sends the reset query. For the one statement of a fetch(), which
    leaves nothing on the session, that round trip was 14 % of a request's time (bench/README.md).
    psycopg's pool and SQLAlchemy's do no such reset either, and PgBouncer in transaction mode keeps
    no session state across transactions in any case.
    """

    session_changed = False

    def change_session(self) -> None:
        """Reset this connection before it goes back to the pool (the pool hands out proxies, which
        pass method calls on but take no attributes)."""
        self.session_changed = True

    def get_reset_query(self) -> str:
        # asyncpg's Connection.reset(), on release, runs what this returns, when it is not empty.
        if not self.session_changed:
            return ""
        self.session_changed = False
        return super().get_reset_query()


# Where the plugin puts itself on each request's context, by default: `ctx.peek(DB)` (typed), or `ctx.db`.
# `Postgres(..., name=...)` picks another name; a project then makes its own Key of that name.
DB: Key["Postgres"] = Key("db")
# Where it keeps itself on the app whatever its name, for the plugins that use it: `postgres_of(app)`.
PLUGIN = "heaven_plugins.postgres"


def postgres_of(app) -> "Postgres":
    """The Postgres plugin installed on `app` (sign-in, health and metrics ask for it this way)."""
    return app.peek(PLUGIN)


# Seconds a 503 asks its client to wait before trying again (Retry-After). An outage the plugin sees
# ends for it within a probe (WATCH_INTERVAL), a restart or a failover takes seconds: 2 s lets a retry
# find most of them over, while clients retrying at once would only add to the load of a database
# coming back, and of a pool already full.
RETRY_AFTER = 2


class DatabaseUnavailable(HTTPError):
    """The database could not answer: the client gets a 503 saying why in words, with Retry-After."""

    def __init__(
        self,
        cause: BaseException,
        code: str = "database_unavailable",
        detail: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        # `reason`, for the log, is the outage's when one is on: a request that found every connection
        # held by queries into a silent network was refused by the outage, not by a busy pool.
        self.reason = reason or explain(cause)
        if detail is None:
            phrase = self.reason.partition(" (")[0] if reason else explain(cause, details=False)
            detail = f"{phrase}; try again in {RETRY_AFTER} s"
        super().__init__(503, code, detail, headers=(("Retry-After", str(RETRY_AFTER)),))
        self.cause = cause


class DatabaseReadOnly(DatabaseUnavailable):
    """The database answers reads but refuses writes (a failover onto a replica): a 503 of its own."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(
            cause, "database_read_only", f"the database accepts no writes right now; try again in {RETRY_AFTER} s"
        )


class NoConnectionFree(TimeoutError):
    """Every connection of the pool stayed busy for acquire_timeout: the pool is exhausted, not the database."""


# Outages that a connection opened before them survives: their reason (explain) starts with this.
LOGIN_REFUSED = "the database refused the login"
# Why a request that waited for a connection just after an outage was refused.
OUTAGE_TAIL = "the connections are still held by requests sent into the outage that just ended"


class _Trouble:
    """One outage, read-only spell or exhausted pool: since when, why, how many requests it refused."""

    __slots__ = ("confirmed", "last", "reason", "refused", "since")

    def __init__(self, since: float, reason: str) -> None:
        self.since = self.last = since  # the loop's clock at its first sign; `last` at its last refusal
        self.reason = reason  # what the first sign said
        self.refused = 0
        self.confirmed = False  # by a probe, which finds what the requests suspect; logged from then on


class _Querying:
    """fetch, fetchrow, fetchval and execute, with rows bound to Structs, over `_run`, which runs
    one asyncpg Connection method: on a held connection (Queries) or a borrowed one (Postgres)."""

    __slots__ = ()

    async def _run(self, method: str, query: str, args: tuple, **options: Any) -> Any:
        raise NotImplementedError

    @overload
    async def fetch(self, query: str, *args: Any, bind: type[S]) -> list[S]: ...
    @overload
    async def fetch(self, query: str, *args: Any, bind: None = None) -> list[asyncpg.Record]: ...
    async def fetch(self, query, *args, bind=None):
        """All rows, as a list of `bind` Structs when given (validated), else asyncpg Records."""
        rows = await self._run("fetch", query, args)
        return bind_rows(rows, bind) if bind else rows

    @overload
    async def fetchrow(self, query: str, *args: Any, bind: type[S]) -> S | None: ...
    @overload
    async def fetchrow(self, query: str, *args: Any, bind: None = None) -> asyncpg.Record | None: ...
    async def fetchrow(self, query, *args, bind=None):
        """The first row or None, as a `bind` Struct when given."""
        row = await self._run("fetchrow", query, args)
        return bind_rows((row,), bind)[0] if bind and row is not None else row

    async def fetchval(self, query: str, *args: Any, column: int = 0) -> Any:
        """One value of the first row, or None when there is no row."""
        return await self._run("fetchval", query, args, column=column)

    async def execute(self, query: str, *args: Any) -> str:
        """Run a statement; returns its status, such as "DELETE 1"."""
        return await self._run("execute", query, args)


class Queries(_Querying):
    """fetch, fetchrow, fetchval and execute on one asyncpg connection, with rows bound to Structs."""

    __slots__ = ("_conn", "_timeout")

    def __init__(self, conn: asyncpg.Connection, timeout: float | None) -> None:
        self._conn, self._timeout = conn, timeout

    async def _run(self, method: str, query: str, args: tuple, **options: Any) -> Any:
        return await getattr(self._conn, method)(query, *args, timeout=self._timeout, **options)


class Postgres(_Querying):
    """The plugin: `app.plugin(Postgres(dsn))` opens a pool at startup, closes it at shutdown, and
    puts itself on the app (`app.peek(name)`) and on every request's context (`ctx.<name>`).

    Each query method borrows a connection for that query alone; `connection()` and `transaction()`
    hold one for a block. A connection goes back to the pool without a reset unless its session may
    have changed (Connection): run a statement that sets session state in such a block.

    When the database cannot be reached they raise DatabaseUnavailable (a 503), and DatabaseReadOnly
    (a 503 too) for a write the server refuses as read-only.

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
        self._connect_timeout = connect_timeout
        self._acquire_timeout = acquire_timeout
        self._max_size = max_size
        self._borrowed = 0  # connections held or awaited through this plugin; the pool's own count is a loop
        # Tasks waiting for a connection, oldest first: their deadline, or None once it passed.
        self._waiting: dict[asyncio.Task, float | None] = {}
        self._expiry: asyncio.TimerHandle | None = None  # the one timer of all the waiting tasks
        # The pool's loop, kept: on Python 3.11 each asyncio.get_running_loop() is a getpid system call.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._query_timeout = query_timeout
        self._tcp_user_timeout = tcp_user_timeout
        # Connections being reset on release now, and at the last sweep (see _sweep).
        self._resetting: set = set()
        self._resetting_before: set = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.available = True
        self.outages = 0
        self._outage: _Trouble | None = None
        self._outage_tail = 0.0  # until then, a request refused for want of a connection began waiting in it
        self._read_only: _Trouble | None = None
        self._exhausted: _Trouble | None = None
        self._prober: asyncpg.Connection | None = None  # the connection of check() and the outage watch
        self._strays: list[int] = []  # server processes of dropped connections, for the next probe to end
        self._probing: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        # On each record the plugin logs, as `record.postgres`: which plugin said it (not in the JSON line).
        self._extra = {"postgres": self}

    @property
    def waiting(self) -> int:
        """Requests waiting now for a connection of the full pool."""
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        """True while requests are refused for want of a free connection: the pool is exhausted
        (every connection held by a slow query, a lock), though the database may answer."""
        return self._exhausted is not None

    def install(self, app) -> None:
        """Register the startup and shutdown hooks on `app` and put the plugin on every request's context."""
        app.ON("startup", self.startup)
        app.ON("shutdown", self.shutdown)
        app.keep(self.name, self)
        app.keep(PLUGIN, self)
        if hasattr(app, "provide"):  # this project's App: the same, without a hook on every request
            app.provide(self.name, self)
            return

        def inject(req, res, ctx):  # not async: Heaven calls a plain hook without a coroutine
            ctx.keep(self.name, self)

        app.BEFORE("/*", inject)

    async def startup(self, app=None) -> None:
        """Open the pool; raises, naming host, port and database but never the password, if it cannot."""
        try:
            self._loop = asyncio.get_running_loop()
            self.pool = await asyncpg.create_pool(self.dsn, **self._pool_options)
        except Exception as exc:
            raise RuntimeError(f"cannot connect to Postgres at {describe(self.dsn)}: {explain(exc)}") from None
        self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)
        _quiet_floor.watch(self)
        log.info("connected to Postgres at %s", describe(self.dsn), extra=self._extra)

    async def shutdown(self, app=None) -> None:
        """Close the pool, letting borrowed connections finish their queries first; if it has not
        closed within CLOSE_TIMEOUT seconds (a silent network), terminate its connections."""
        _quiet_floor.forget(self)
        for timer in (self._expiry, self._sweeper):
            if timer is not None:
                timer.cancel()
        self._expiry = self._sweeper = None
        for task in (self._watcher, self._probing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._drop_prober()  # it runs no query now: nothing to wait for
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

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Queries]:
        """Borrow one connection for several statements, outside a transaction."""
        try:
            conn = await self._acquire()
            # Several statements of yours: the connection is reset before it goes back.
            conn.change_session()
            try:
                yield Queries(conn, self._query_timeout)
            except _ADRIFT:
                self._drop(conn)
                raise
            finally:
                await self._release(conn)
        except UNAVAILABLE as exc:
            raise self._refuse(exc) from exc

    async def _acquire(self) -> asyncpg.Connection:
        free = self._borrowed < self._max_size
        # Counted before the wait, so requests arriving meanwhile see the pool as taken.
        self._borrowed += 1
        try:
            if free:
                # A connection is idle and nobody waits, so acquire() takes it at once (at most it
                # connects, within connect_timeout): no timer to arm and cancel, 4% of a request.
                return await self.pool.acquire()
            return await self._wait_for_connection()
        except BaseException:
            self._borrowed -= 1
            raise

    async def _wait_for_connection(self) -> asyncpg.Connection:
        # The pool is full: wait in its queue for at most acquire_timeout, then TimeoutError. What
        # asyncio.timeout does, but with one timer for every waiting task instead of one each
        # (5 µs a request on Python 3.11, a sixth of it): all wait equally long, so the first to
        # come is the first due, and the timer only ever needs to be set for the oldest.
        # Not pool.acquire(timeout=...) either: asyncpg wraps that in wait_for, a new Task each time.
        task = asyncio.current_task(self._loop)
        self._waiting[task] = deadline = self._loop.time() + self._acquire_timeout
        if self._expiry is None:
            self._expiry = self._loop.call_at(deadline, self._expire_waiting)
        try:
            return await self.pool.acquire()
        except asyncio.CancelledError:
            # Cancelled by _expire_waiting, and by nothing else, is a timeout.
            if self._waiting[task] is None and task.uncancel() == 0:
                raise NoConnectionFree(f"no connection free within {self._acquire_timeout} s") from None
            raise
        finally:
            del self._waiting[task]

    def _expire_waiting(self) -> None:
        now = self._loop.time()
        for task, deadline in self._waiting.items():  # oldest first
            if deadline is None:  # expired already, still unwinding
                continue
            if deadline > now:
                self._expiry = self._loop.call_at(deadline, self._expire_waiting)
                return
            self._waiting[task] = None
            task.cancel()
        self._expiry = None

    async def _release(self, conn: asyncpg.Connection) -> None:
        # The pool resets the connection here when it must (Connection: a round trip). No timer per request
        # bounds it, which would cost 1.4% of a request: _sweep terminates a reset that takes over a second.
        resetting = self._resetting
        resetting.add(conn)
        try:
            await self.pool.release(conn)
        except Exception as exc:
            # The reset failed and asyncpg terminated the connection; the answer the request got stands.
            log.debug("connection terminated after its reset failed: %s", explain(exc))
        finally:
            resetting.discard(conn)
            # Only now is the connection back in the pool; counting it free any earlier would
            # let _acquire wait for it without a timer.
            self._borrowed -= 1

    def _sweep(self) -> None:
        # Once a second: a connection that was resetting at the last sweep and still is has waited over a
        # second for a round trip of a millisecond. The network or the server is gone: terminate it.
        stuck = self._resetting & self._resetting_before
        self._resetting_before = set(self._resetting)
        if stuck:
            self._loop.call_soon(self._terminate_stuck, stuck, LOOP_TURNS)
        self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _terminate_stuck(self, stuck: set, turns: int) -> None:
        # On a loop lagging under load, a reset's answer may have come and still be a few turns of the
        # loop from its task (protocol, pool, shield, request): only what LOOP_TURNS turns leave is stuck.
        stuck &= self._resetting
        if stuck and turns:
            self._loop.call_soon(self._terminate_stuck, stuck, turns - 1)
            return
        for conn in stuck:
            self._drop(conn)

    def _drop(self, conn: asyncpg.Connection) -> None:
        # A connection whose query timed out or failed, or whose reset hangs, may wait on a network that
        # never answers: terminated now, not reset, nor cancelled over a new connection into the same
        # silence. Its server process, if it still runs, is ended by the next probe.
        try:
            if not conn.is_closed() and len(self._strays) < MAX_STRAYS:
                self._strays.append(conn.get_server_pid())
            conn.terminate()
        except asyncpg.InterfaceError:
            pass  # lost already: asyncpg closed it and took it back into the pool

    async def _run(self, method: str, query: str, args: tuple, **options: Any) -> Any:
        # One query on a connection borrowed for it alone: what connection() does, without the
        # context manager and the Queries it allocates, since every request goes through here.
        try:
            conn = await self._acquire()
            try:
                if changes_session(query):
                    conn.change_session()
                return await getattr(conn, method)(query, *args, timeout=self._query_timeout, **options)
            except _ADRIFT:
                self._drop(conn)
                raise
            finally:
                await self._release(conn)
        except UNAVAILABLE as exc:
            raise self._refuse(exc) from exc

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
                if not isinstance(exc, _ADRIFT):  # else the connection is terminated, which rolls back
                    async with asyncio.timeout(self._query_timeout):
                        await transaction.rollback()
                raise
            async with asyncio.timeout(self._query_timeout):
                await transaction.commit()

    # --- when the database goes away: what was refused, and what a probe finds --------------------

    def _refuse(self, exc: BaseException) -> DatabaseUnavailable:
        # A request is refused with a 503: note the sign (an outage, a read-only server, an exhausted
        # pool), log the first one, and let the watch find out when it ends. Only refused requests come here.
        now = self._loop.time()
        if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
            # A failover onto a replica, if a probe finds the server read-only (logged then); else a
            # transaction the code itself declared read-only.
            if self._read_only is None:
                self._read_only = _Trouble(now, explain(exc))
            self._read_only.refused += 1
            self._watch()
            return DatabaseReadOnly(exc)
        if isinstance(exc, NoConnectionFree) and self._outage is None and now < self._outage_tail:
            # The wait began during an outage that has ended since: its connections were still held by
            # requests sent into it (a query over a silent network waits out its timeout). Not exhaustion.
            return DatabaseUnavailable(exc, reason=f"{OUTAGE_TAIL} ({type(exc).__name__}: {exc})")
        if isinstance(exc, NoConnectionFree) and not (self._outage and self._outage.confirmed):
            # The pool is exhausted: by a lock or slow queries if the database answers a probe (logged
            # then), else by an outage, which counts the refusals as its own.
            if self._exhausted is None:
                self._exhausted = _Trouble(now, str(exc))
            self._exhausted.refused += 1
            self._exhausted.last = now
        else:
            # A refused connection, a dropped one, a timeout: an outage, or only a slow query? A probe tells.
            self.available = False
            if self._outage is None:
                self._outage = _Trouble(now, explain(exc))
            self._outage.refused += 1
            self._watch()
            return DatabaseUnavailable(exc, reason=self._outage.reason)
        self._watch()
        return DatabaseUnavailable(exc)

    async def check(self, within: float = 0.8) -> str:
        """Ask the database, within `within` seconds, over the plugin's own connection (never waiting
        behind requests for the pool's): "ok", "read_only" (it refuses writes) or "unreachable"."""
        probing = self._probing
        if probing is None:
            probing = self._probing = self._loop.create_task(self._probe())
        try:
            # Shielded: a caller giving up leaves the probe to finish for the others.
            async with asyncio.timeout(within):
                return await asyncio.shield(probing)
        except TimeoutError:
            return "unreachable"

    async def _probe(self) -> str:
        # One probe at a time, shared by every check() meanwhile.
        try:
            if self._outage is not None and self._outage.reason.startswith(LOGIN_REFUSED):
                # A refused login (a rotated password) spares the connections opened before it: the outage
                # ends only when a new connection is let in, as the pool's must be.
                self._drop_prober()
            while True:
                kept = self._prober is not None and not self._prober.is_closed()
                try:
                    read_only = await self._ask()
                except (Exception, asyncio.CancelledError) as exc:
                    self._drop_prober()
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    if kept and not isinstance(exc, TimeoutError):
                        continue  # the connection kept from before failed (a restart ended it): ask on a new one
                    self._found("unreachable", explain(exc))
                    return "unreachable"
                state = "read_only" if read_only == "on" else "ok"
                self._found(state, "")
                return state
        finally:
            self._probing = None

    async def _ask(self) -> str:
        if self._prober is None or self._prober.is_closed():
            prober = await asyncpg.connect(self.dsn, timeout=self._connect_timeout, statement_cache_size=0)
            self._keep_alive(prober)
            self._prober = prober
        read_only = await self._prober.fetchval(READ_ONLY, timeout=PROBE_TIMEOUT)
        if self._strays:
            strays = self._strays[:]
            await self._prober.execute(TERMINATE_STRAYS, strays, timeout=PROBE_TIMEOUT)
            del self._strays[: len(strays)]
        return read_only

    def _drop_prober(self) -> None:
        if self._prober is not None:
            self._prober.terminate()
            self._prober = None

    def _found(self, state: str, reason: str) -> None:
        # What a probe found ends or confirms what the requests saw.
        now = self._loop.time()
        outage = self._outage
        if state == "unreachable":
            self.available = False
            if outage is None:
                outage = self._outage = _Trouble(now, reason)
            if self._exhausted is not None and not self._exhausted.confirmed:
                outage.refused += self._exhausted.refused
                self._exhausted = None
            if not outage.confirmed:
                outage.confirmed = True
                self.outages += 1
                log.warning(
                    "Postgres at %s is unreachable: %s; requests are refused with 503 until it answers",
                    describe(self.dsn),
                    reason or outage.reason,
                    extra=self._extra,
                )
            self._watch()
            return
        if outage is not None:
            self._outage = None
            self.available = True
            if outage.confirmed:
                self._outage_tail = now + self._acquire_timeout
                log.warning(
                    "Postgres at %s answers again after %.1f s unreachable; %d requests refused",
                    describe(self.dsn),
                    now - outage.since,
                    outage.refused,
                    extra=self._extra,
                )
        spell = self._read_only
        if state == "read_only" and (spell is None or not spell.confirmed):
            spell = self._read_only = spell or _Trouble(now, "transaction_read_only is on")
            spell.confirmed = True
            log.warning(
                "Postgres at %s is read-only: writes are refused with 503 database_read_only, reads go on",
                describe(self.dsn),
                extra=self._extra,
            )
        elif state == "ok" and spell is not None:
            self._read_only = None
            if spell.confirmed:
                log.warning(
                    "Postgres at %s accepts writes again after %.1f s read-only; %d requests refused",
                    describe(self.dsn),
                    now - spell.since,
                    spell.refused,
                    extra=self._extra,
                )
        exhausted = self._exhausted
        if exhausted is not None and not exhausted.confirmed:
            exhausted.confirmed = True
            log.warning(
                "all %d connections to Postgres at %s busy for %s s, the database answering: "
                "requests refused with 503 until one is free",
                self._max_size,
                describe(self.dsn),
                self._acquire_timeout,
                extra=self._extra,
            )
        if exhausted is not None and now - exhausted.last > self._acquire_timeout:
            self._exhausted = None
            log.warning(
                "connections to Postgres at %s free again after %.1f s all busy; %d requests refused",
                describe(self.dsn),
                exhausted.last - exhausted.since,
                exhausted.refused,
                extra=self._extra,
            )
        self._watch()

    def _watch(self) -> None:
        # While anything is wrong, one task probes every WATCH_INTERVAL to see it end (not after shutdown began).
        if self._watcher is None and self._sweeper is not None and (self._outage or self._read_only or self._exhausted):
            self._watcher = self._loop.create_task(self._watching())

    def _watch_floor(self, exc: BaseException) -> None:
        # The pool failed to reconnect in the background: an outage, perhaps, that a probe confirms.
        if self._outage is None and self._sweeper is not None:
            self.available = False
            self._outage = _Trouble(self._loop.time(), explain(exc))
        self._watch()

    async def _watching(self) -> None:
        try:
            while self._outage or self._read_only or self._exhausted:
                await self.check(within=PROBE_TIMEOUT + self._connect_timeout)
                if self._outage or self._read_only or self._exhausted:
                    await asyncio.sleep(WATCH_INTERVAL)
        finally:
            self._watcher = None

    # --- the network: dead connections noticed by the kernel ----------------------------------------

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        self._keep_alive(conn)

    def _keep_alive(self, conn: asyncpg.Connection) -> None:
        # A connection whose peer went silent (a dead host, a dropped NAT entry, a failover) would be
        # noticed only by a query that times out, one by one. The kernel notices for us: keepalive
        # probes on an idle connection, and TCP_USER_TIMEOUT closing a connection whose data or probes
        # go unacknowledged that long. asyncpg has no option for these: its transport's socket takes them.
        sock = conn._transport.get_extra_info("socket")
        if self._tcp_user_timeout is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # a unix socket has no network to lose
        probe_every = max(1, int(self._tcp_user_timeout / 2))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (
            ("TCP_KEEPIDLE", probe_every),  # Linux; macOS calls it TCP_KEEPALIVE
            ("TCP_KEEPALIVE", probe_every),
            ("TCP_KEEPINTVL", probe_every),
            ("TCP_KEEPCNT", 2),
            ("TCP_USER_TIMEOUT", int(self._tcp_user_timeout * 1000)),  # Linux only, in milliseconds
        ):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class _QuietFloor(logging.Filter):
    """On asyncpg's pool logger: its "Failed to restore the pool connection floor; retrying" comes once a
    retry, each with a 30-line traceback. During an outage the plugin's own WARNING says it all: dropped.
    Otherwise it is one line, and the running plugins look into it with a probe."""

    def __init__(self) -> None:
        super().__init__()
        self.plugins: set[Postgres] = set()

    def watch(self, plugin: Postgres) -> None:
        self.plugins.add(plugin)
        logging.getLogger("asyncpg.pool").addFilter(self)

    def forget(self, plugin: Postgres) -> None:
        self.plugins.discard(plugin)
        if not self.plugins:
            logging.getLogger("asyncpg.pool").removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Failed to restore the pool connection floor") or not record.exc_info:
            return True
        _, failure, trace = record.exc_info
        # asyncpg logs it where the pool caught the failure, in a method of its own: that frame's `self`.
        pool = trace.tb_frame.f_locals.get("self") if trace else None
        plugins = [plugin for plugin in self.plugins if plugin.pool is pool]
        if len(plugins) == 1:
            record.postgres = plugins[0]  # which plugin's pool, as on the plugin's own records
        plugins = plugins or list(self.plugins)
        if any(not plugin.available for plugin in plugins):
            return False
        record.msg, record.args = f"{record.msg}: %s", (explain(failure),)
        record.exc_info = record.exc_text = None
        for plugin in plugins:
            plugin._watch_floor(failure)
        return True


_quiet_floor = _QuietFloor()


class BindError(TypeError):
    """The rows of a query do not fit the Struct they were bound to."""


def bind_rows(rows: Sequence[asyncpg.Record], struct: type[S]) -> list[S]:
    """Records to Structs, every value checked against its field's type.

    When the columns are the Struct's fields in order, the values are validated as tuples in one
    msgspec call and passed to the Struct positionally, several times faster than
    msgspec.convert over Records. Otherwise (other order, fewer columns) the rows go through dicts.
    """
    if not rows:
        return []
    fields, row_type = _plan(struct)
    try:
        if tuple(rows[0].keys()) == fields:
            return list(starmap(struct, msgspec.convert(list(map(_values, rows)), row_type)))
        return msgspec.convert([dict(row) for row in rows], list[struct])
    except msgspec.ValidationError:
        return _explain_rows(rows, struct)


# A Record's values as a tuple: record[:] is twice as fast as tuple(record), which iterates.
_values = itemgetter(slice(None))
_plans: dict[type, tuple[tuple[str, ...], Any]] = {}


def _plan(struct: type) -> tuple[tuple[str, ...], Any]:
    plan = _plans.get(struct)
    if plan is None:
        if any(p.kind is p.KEYWORD_ONLY for p in inspect.signature(struct).parameters.values()):
            raise BindError(f"{struct.__name__} has keyword-only fields; bind passes fields by position")
        fields = msgspec.structs.fields(struct)
        plan = _plans[struct] = (
            tuple(field.name for field in fields),
            list[tuple[tuple(field.type for field in fields)]],  # type: ignore[misc]
        )
    return plan


def _explain_rows(rows: Sequence[asyncpg.Record], struct: type) -> list:
    # Errors are rare, so say which column failed the slow way, through dicts named by column.
    try:
        return msgspec.convert([dict(row) for row in rows], list[struct])
    except msgspec.ValidationError as exc:
        raise BindError(f"rows do not fit {struct.__name__}: {exc}") from None


def describe(dsn: str) -> str:
    """host:port/database of a DSN, for logs: never the user's password."""
    parts = urlsplit(dsn)
    query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
    host = parts.hostname or query.get("host") or "localhost"
    port = parts.port or query.get("port") or 5432
    database = parts.path.lstrip("/") or query.get("dbname") or parts.username or "postgres"
    return f"{host}:{port}/{database}"


# What each failure to reach or use the database means, in words; the first class that fits says it.
_FAILURES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    # Not "busy": until a probe answers, the connections may as well be held by queries into a silent network.
    (NoConnectionFree, "no connection to the database came free in time"),
    (TimeoutError, "the database did not answer in time"),
    (FileNotFoundError, "the database's socket is gone"),
    (ConnectionRefusedError, "nothing listens at the database's address"),
    ((ConnectionResetError, ConnectionAbortedError, BrokenPipeError), "the connection to the database was cut"),
    (socket.gaierror, "the database's host name does not resolve"),
    (asyncpg.InvalidAuthorizationSpecificationError, LOGIN_REFUSED),  # 28000, and 28P01 a wrong password
    (asyncpg.TooManyConnectionsError, "the database has no connection slot left"),
    (asyncpg.CannotConnectNowError, "the database is starting up or shutting down"),
    (asyncpg.AdminShutdownError, "the database ended the connection: a shutdown, or an administrator"),
    (asyncpg.CrashShutdownError, "the database crashed and is restarting"),
    (asyncpg.QueryCanceledError, "the query was cancelled by a statement timeout or an administrator"),
    (asyncpg.OperatorInterventionError, "the database is stopping or was stopped"),
    (asyncpg.InsufficientResourcesError, "the database is out of memory, disk or connection slots"),
    (asyncpg.ReadOnlySQLTransactionError, "the database is read-only"),
    (asyncpg.UndefinedTableError, "a table is missing: were the migrations applied?"),
    (asyncpg.PostgresConnectionError, "the connection to the database was lost"),
    (asyncpg.InternalClientError, "a connection to the database broke"),
    (OSError, "the network to the database failed"),
)


def explain(exc: BaseException, *, details: bool = True) -> str:
    """Why the database could not answer, in words: "the database's socket is gone (FileNotFoundError:
    [Errno 2] No such file or directory)". For logs; `details=False` leaves out the parenthesis (the
    exception's type and message, which may name a host or a user but never a password), for clients."""
    phrase = next((words for kinds, words in _FAILURES if isinstance(exc, kinds)), None)
    if phrase is None:
        phrase = "the database could not answer"
    if not details:
        return phrase
    return f"{phrase} ({type(exc).__name__}: {exc})" if str(exc) else f"{phrase} ({type(exc).__name__})"
