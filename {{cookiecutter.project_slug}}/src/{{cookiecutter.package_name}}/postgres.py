"""The Postgres plugin: the pool's lifecycle, the handle on each request's context, rows bound to Structs."""

import asyncio
import contextlib
import inspect
import logging
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
    # A connection the server dropped mid-query, found in a broken state when the pool resets it on release.
    asyncpg.InternalClientError,
)


# Where the plugin puts itself on each request's context: `ctx.peek(DB)` (typed), or `ctx.{{ cookiecutter.context_name }}`.
DB: Key["Postgres"] = Key("{{ cookiecutter.context_name }}")


class DatabaseUnavailable(HTTPError):
    """The database could not answer: the client gets a 503 and may retry."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(503, "database_unavailable", "the database is unavailable; try again shortly")
        self.cause = cause


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

    Each query method borrows a connection for that query alone; `transaction()` holds one for a
    block. When the database cannot be reached they raise DatabaseUnavailable (a 503).
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
        query_timeout: float | None = 30.0,
        statement_cache_size: int = 100,
    ) -> None:
        self.dsn, self.name = dsn, name
        self.pool: asyncpg.Pool | None = None
        self._pool_options = {
            "min_size": min_size,
            "max_size": max_size,
            "timeout": connect_timeout,
            "statement_cache_size": statement_cache_size,
        }
        self._acquire_timeout = acquire_timeout
        self._max_size = max_size
        self._borrowed = 0  # connections held or awaited through this plugin; the pool's own count is a loop
        # Tasks waiting for a connection, oldest first: their deadline, or None once it passed.
        self._waiting: dict[asyncio.Task, float | None] = {}
        self._expiry: asyncio.TimerHandle | None = None  # the one timer of all the waiting tasks
        # The pool's loop, kept: on Python 3.11 each asyncio.get_running_loop() is a getpid system call.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._query_timeout = query_timeout

    def install(self, app) -> None:
        """Register the startup and shutdown hooks on `app` and put the plugin on every request's context."""
        app.ON("startup", self.startup)
        app.ON("shutdown", self.shutdown)
        app.keep(self.name, self)
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
            raise RuntimeError(f"cannot connect to Postgres at {describe(self.dsn)}: {_reason(exc)}") from None
        log.info("connected to Postgres at %s", describe(self.dsn))

    async def shutdown(self, app=None) -> None:
        """Close the pool, letting borrowed connections finish their queries first."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
            log.info("disconnected from Postgres at %s", describe(self.dsn))

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Queries]:
        """Borrow one connection for several statements, outside a transaction."""
        try:
            conn = await self._acquire()
            try:
                yield Queries(conn, self._query_timeout)
            finally:
                await self._release(conn)
        except UNAVAILABLE as exc:
            raise DatabaseUnavailable(exc) from exc

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
                raise TimeoutError(f"no connection free within {self._acquire_timeout} s") from None
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
        # The pool resets the connection here (one round trip), untimed as in asyncpg's own
        # pool.fetch: a dead server fails the reset at once, and the pool drops that connection.
        try:
            await self.pool.release(conn)
        finally:
            # Only now is the connection back in the pool; counting it free any earlier would
            # let _acquire wait for it without a timer.
            self._borrowed -= 1

    async def _run(self, method: str, query: str, args: tuple, **options: Any) -> Any:
        # One query on a connection borrowed for it alone: what connection() does, without the
        # context manager and the Queries it allocates, since every request goes through here.
        try:
            conn = await self._acquire()
            try:
                return await getattr(conn, method)(query, *args, timeout=self._query_timeout, **options)
            finally:
                await self._release(conn)
        except UNAVAILABLE as exc:
            raise DatabaseUnavailable(exc) from exc

    @contextlib.asynccontextmanager
    async def transaction(self, **options: Any) -> AsyncIterator[Queries]:
        """`async with db.transaction() as tx:` commits when the block ends, rolls back if it raises.

        options go to asyncpg's `Connection.transaction` (isolation, readonly, deferrable).
        """
        async with self.connection() as queries, queries._conn.transaction(**options):
            yield queries


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
        return _explain(rows, struct)


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


def _explain(rows: Sequence[asyncpg.Record], struct: type) -> list:
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


def _reason(exc: BaseException) -> str:
    # asyncpg's messages name the host and the user, never the password; the type says the rest.
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
