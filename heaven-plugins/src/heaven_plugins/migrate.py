"""Migrations: .sql files from several directories (the project's, and each plugin's that brings some),
applied in name order, each once. A project calls `migrate(conn, directories)`; its command, the tests,
the dev server and a deploy's one-shot job all call it the same way.
"""

import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from .postgres import describe

log = logging.getLogger(__name__)

# Any constant will do, as long as every process that migrates uses the same one.
LOCK_ID = 7_205_317_846_115_443
CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(conn: asyncpg.Connection, directories: Sequence[Path]) -> list[str]:
    """Apply the .sql files of `directories` not applied yet, all in one name order; returns the names it
    applied. A file is known by its name alone, so two directories may not hold the same name.

    An advisory lock makes a second process wait rather than race, and each file runs in a
    transaction with its record in schema_migrations, so a failing file leaves no trace.
    """
    applied = []
    migrations = read_migrations(directories)
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        await conn.execute(CREATE_MIGRATIONS_TABLE)
        done = {row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migrations:
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            log.info("applied %s", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    return applied


def read_migrations(directories: Sequence[Path]) -> list[tuple[str, str]]:
    """(name, SQL) of each .sql file in `directories`, in name order; a name in two of them is refused."""
    found: dict[str, Path] = {}
    for directory in directories:
        for path in directory.glob("*.sql"):
            if path.name in found:
                raise ValueError(f"two migrations named {path.name}: {found[path.name]} and {path}")
            found[path.name] = path
    return [(name, found[name].read_text(encoding="utf-8")) for name in sorted(found)]


async def connect(database_url: str, connect_timeout: float = 5.0) -> asyncpg.Connection:
    """One connection for a command (migrations, a project's admin command), or an exit naming host,
    port and database, never the password."""
    try:
        return await asyncpg.connect(database_url, timeout=connect_timeout)
    except Exception as exc:
        where = describe(database_url)
        raise SystemExit(f"cannot connect to Postgres at {where}: {type(exc).__name__}: {exc}") from None


async def apply(database_url: str, directories: Sequence[Path], connect_timeout: float = 5.0) -> list[str]:
    """Connect, migrate, disconnect: what the command and the dev server do."""
    conn = await connect(database_url, connect_timeout)
    try:
        return await migrate(conn, directories)
    finally:
        await conn.close()


def main(database_url: str, directories: Sequence[Path], connect_timeout: float = 5.0) -> None:
    """A project's `python -m <package>.migrate`: apply what is new, and say what was applied, and where."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
    applied = asyncio.run(apply(database_url, directories, connect_timeout))
    print(f"{describe(database_url)}: applied {len(applied)} migration(s) {', '.join(applied)}".rstrip())
