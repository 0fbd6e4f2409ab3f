"""One throwaway Postgres for every contender, pinned to the load generator's core, with the same users table."""

import asyncio
import os
import subprocess
from pathlib import Path

import asyncpg
import pgserver

ROWS = 10_000
# Every row gets a distinct timestamp with a microsecond part, some of them ending in zeros
# (.246000), so the byte-for-byte check sees how each stack writes fractions of a second.
LOAD_USERS = f"""
INSERT INTO users (email, name, is_active, created_at)
SELECT 'user' || i || '@example.com', 'User ' || i, i % 7 <> 0,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '61.000123 seconds'
FROM generate_series(1, {ROWS}) AS i
"""


def start(directory: Path, core: int) -> str:
    """Start (or reuse) the server in `directory` and pin it to `core`; returns a unix-socket DSN.

    pgserver runs Postgres as an unprivileged user when we are root, which initdb insists on.
    """
    server = pgserver.get_server(directory, cleanup_mode="stop")
    pin(directory, core)
    return server.get_uri()


def pin(directory: Path, core: int) -> None:
    # Backends are forked from the postmaster, so they inherit its affinity; its current
    # children (checkpointer, walwriter...) are pinned one by one.
    postmaster = int((directory / "postmaster.pid").read_text().split()[0])
    for pid in [postmaster, *children(postmaster)]:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(core), str(pid)],
            check=False,
            timeout=10,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def children(parent: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                found.append(int(entry.name))
    return found


async def load_users(dsn: str, migrations: list[Path]) -> None:
    """A fresh users table: the baked project's migrations (sign-in's among them, `<package>.migrate.MIGRATIONS`),
    then ROWS rows."""
    from heaven_plugins.migrate import migrate  # installed with the bake, after this module is imported

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        # Whatever an earlier run's migrations made (tables, sign-in's trigger function) goes.
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        await migrate(conn, migrations)
        await conn.execute(LOAD_USERS)
        await conn.execute("VACUUM ANALYZE users")
    finally:
        await conn.close()


def prepare(directory: Path, core: int, migrations: list[Path]) -> str:
    dsn = start(directory, core)
    asyncio.run(load_users(dsn, migrations))
    return dsn
