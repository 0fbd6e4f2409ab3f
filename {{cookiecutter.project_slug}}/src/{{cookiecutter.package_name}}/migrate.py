"""Migrations: the SQL files beside this module, applied in name order, each once.

Run `python -m {{ cookiecutter.package_name }}.migrate`; tests and deploys call `migrate(conn)` the same way.
"""

import asyncio
import logging
import sys
from pathlib import Path

import asyncpg

from .postgres import describe
from .settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant will do, as long as every process that migrates uses the same one.
LOCK_ID = 7_205_317_846_115_443
CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS) -> list[str]:
    """Apply the .sql files of `directory` not applied yet; returns the names it applied.

    An advisory lock makes a second process wait rather than race, and each file runs in a
    transaction with its record in schema_migrations, so a failing file leaves no trace.
    """
    applied = []
    migrations = read_migrations(directory)
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


def read_migrations(directory: Path) -> list[tuple[str, str]]:
    """(name, SQL) of each .sql file in `directory`, in name order."""
    return [(path.name, path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.sql"))]


async def connect(settings: Settings) -> asyncpg.Connection:
    """One connection for a command (this one, the admin command), or an exit naming host, port and
    database, never the password."""
    try:
        return await asyncpg.connect(settings.database_url, timeout=settings.connect_timeout)
    except Exception as exc:
        where = describe(settings.database_url)
        raise SystemExit(f"cannot connect to Postgres at {where}: {type(exc).__name__}: {exc}") from None


async def main() -> None:
    settings = Settings.from_env()
    conn = await connect(settings)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"{describe(settings.database_url)}: applied {len(applied)} migration(s) {', '.join(applied)}".rstrip())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
    asyncio.run(main())
