"""The Postgres plugin: the pool's lifecycle, the handle on each request's context, rows bound to Structs,
and bounded, quiet behaviour when the database goes away. Its names, from the modules that hold them."""

from .connection import Connection, changes_session
from .errors import (
    LOGIN_REFUSED,
    OUTAGE_TAIL,
    RETRY_AFTER,
    UNAVAILABLE,
    DatabaseReadOnly,
    DatabaseUnavailable,
    NoConnectionFree,
    describe,
    explain,
)
from .plugin import DB, PLUGIN, Postgres, postgres_of
from .queries import Queries
from .rows import BindError, bind_rows

__all__ = [
    "DB",
    "LOGIN_REFUSED",
    "OUTAGE_TAIL",
    "PLUGIN",
    "RETRY_AFTER",
    "UNAVAILABLE",
    "BindError",
    "Connection",
    "DatabaseReadOnly",
    "DatabaseUnavailable",
    "NoConnectionFree",
    "Postgres",
    "Queries",
    "bind_rows",
    "changes_session",
    "describe",
    "explain",
    "postgres_of",
]
