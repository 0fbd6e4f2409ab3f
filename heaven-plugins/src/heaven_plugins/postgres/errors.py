"""What the database layer raises when the database cannot answer, and why in words: no HTTP here."""

import asyncio
import socket
from urllib.parse import unquote, urlsplit

import asyncpg

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
ADRIFT = (
    OSError,
    TimeoutError,
    asyncio.CancelledError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# Seconds a 503 asks its client to wait before trying again (Retry-After). An outage the plugin sees
# ends for it within a probe (WATCH_INTERVAL), a restart or a failover takes seconds: 2 s lets a retry
# find most of them over, while clients retrying at once would only add to the load of a database
# coming back, and of a pool already full.
RETRY_AFTER = 2

# Outages that a connection opened before them survives: their reason (explain) starts with this.
LOGIN_REFUSED = "the database refused the login"
# Why a request that waited for a connection just after an outage was refused.
OUTAGE_TAIL = "the connections are still held by requests sent into the outage that just ended"


class DatabaseUnavailable(Exception):
    """The database could not answer: `code` and `detail` say so to a client in words (the plugin answers
    them as a 503 with Retry-After: RETRY_AFTER), `reason` says why for the log, `cause` is what was raised."""

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
        super().__init__(detail)
        self.code, self.detail, self.cause = code, detail, cause


class DatabaseReadOnly(DatabaseUnavailable):
    """The database answers reads but refuses writes (a failover onto a replica): a code of its own."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(
            cause, "database_read_only", f"the database accepts no writes right now; try again in {RETRY_AFTER} s"
        )


class NoConnectionFree(TimeoutError):
    """Every connection of the pool stayed busy for acquire_timeout: the pool is exhausted, not the database."""


def describe(dsn: str) -> str:
    """host:port/database of a DSN, for logs: never the user's password. Several hosts (libpq's
    `postgresql://u@h1:5432,h2:5433/db`, or `?host=h1,h2&port=5432,5433`) are listed as "h1:5432,h2:5433/db"."""
    parts = urlsplit(dsn)
    query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
    # urlsplit's hostname and port take one host: with several, `port` raises. The netloc is read by hand.
    where = parts.netloc.rpartition("@")[2]
    hosts = [host for host in where.split(",") if host] or query.get("host", "localhost").split(",")
    ports = query.get("port", "").split(",")
    named = []
    for i, host in enumerate(hosts):
        # "h:5433", "h", "[::1]:5433" or "[::1]": a port only after the last colon outside brackets.
        name, colon, port = host.rpartition(":")
        if not colon or name.count("[") != name.count("]"):
            name, port = host, ""
        port = port or ports[min(i, len(ports) - 1)] or "5432"
        named.append(f"{unquote(name) or 'localhost'}:{port}")
    database = parts.path.lstrip("/") or query.get("dbname") or parts.username or "postgres"
    return f"{','.join(named)}/{database}"


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
    # Of a DSN with target_session_attrs: every host refused, or none of them is a primary (a failover under way).
    (asyncpg.TargetServerAttributeNotMatched, "no host of the database is a primary that accepts writes"),
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
