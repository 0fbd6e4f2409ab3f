"""How the plugin's errors are answered over HTTP (`register(app)`, which Postgres.install calls):
503 when the database cannot answer or gave up a transaction that lost a race, 409 naming the field for a
unique violation."""

import re

import asyncpg

from ..web import HTTPError
from .errors import RETRY_AFTER, DatabaseUnavailable

# asyncpg's detail of a unique violation: "Key (lower(email))=(a@b.co) already exists." The key's
# expression, up to the first ")=(" (a column name cannot hold one); its value is never read.
_KEY = re.compile(r"Key \((?P<key>.*?)\)=\(", re.DOTALL)
# In the key: casts ("::text") and string literals name no column; a word before "(" is a function.
_NOT_COLUMNS = re.compile(r"::\s*(?:\"[^\"]*\"|[\w.]+)(?:\[\])?|'(?:[^']|'')*'")
_COLUMN = re.compile(r'"(?P<quoted>(?:[^"]|"")+)"|\b(?P<plain>[A-Za-z_]\w*)\b(?!\s*\()')


def register(app) -> None:
    """Tell `app` (this project's App) how each of these errors is answered."""
    app.answer(DatabaseUnavailable, unavailable)
    app.answer(asyncpg.UniqueViolationError, conflict)
    # A safety net: the flows take their locks in one order, but a project's own SQL may not.
    app.answer(asyncpg.DeadlockDetectedError, contended)
    app.answer(asyncpg.SerializationError, contended)


def unavailable(exc: DatabaseUnavailable) -> HTTPError:
    """503 with the error's code and detail in words, and Retry-After: RETRY_AFTER seconds."""
    return HTTPError(503, exc.code, exc.detail, headers=(("Retry-After", str(RETRY_AFTER)),))


def contended(exc: asyncpg.DeadlockDetectedError | asyncpg.SerializationError) -> HTTPError:
    """503 `database_contention` with Retry-After: Postgres rolled the transaction back because it deadlocked
    or could not be serialized with a concurrent one. Not the client's fault, and a retry (after the other
    committed) usually succeeds; the statement and the other transaction are never told."""
    detail = f"the request raced another one and was rolled back; try again in {RETRY_AFTER} s"
    return HTTPError(503, "database_contention", detail, headers=(("Retry-After", str(RETRY_AFTER)),))


def conflict(exc: asyncpg.UniqueViolationError) -> HTTPError:
    """409 `conflict` naming the field of the unique key violated, read from the key's expression (the email
    of `lower(email)`); the value is never sent back, nor the table's or the key's names."""
    columns = key_columns(exc.detail or "")
    if len(columns) == 1:
        return HTTPError(409, "conflict", f"this {columns[0]} is taken already", columns[0])
    if columns:
        return HTTPError(409, "conflict", f"this combination of {', '.join(columns)} is taken already")
    return HTTPError(409, "conflict", "this conflicts with what exists already")


def key_columns(detail: str) -> list[str]:
    """The columns of the key a unique violation's `detail` names, in order: ["email"] for
    "Key (lower(email))=(a@b.co) already exists.", [] when it names none (no detail: no privilege to see it)."""
    key = _KEY.match(detail)
    if key is None:
        return []
    columns: list[str] = []
    for found in _COLUMN.finditer(_NOT_COLUMNS.sub(" ", key.group("key"))):
        column = found.group("plain") or found.group("quoted").replace('""', '"')
        if column not in columns:
            columns.append(column)
    return columns
