"""Migrations: each file once, in order, in a transaction, whoever runs them and however often."""

import asyncio

import asyncpg
import pytest

from heaven_plugins.migrate import migrate


@pytest.fixture
async def scratch(migrated, tmp_path):
    """An empty schema of its own, so these tests never touch the users table."""
    conn = await asyncpg.connect(migrated)
    await conn.execute("DROP SCHEMA IF EXISTS scratch CASCADE; CREATE SCHEMA scratch")
    await conn.close()

    async def connect():
        return await asyncpg.connect(migrated, server_settings={"search_path": "scratch"})

    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "0002_b.sql").write_text("INSERT INTO a VALUES (1);")
    yield connect, tmp_path
    conn = await asyncpg.connect(migrated)
    await conn.execute("DROP SCHEMA scratch CASCADE")
    await conn.close()


async def test_applies_each_file_once_in_order(scratch):
    connect, directory = scratch
    conn = await connect()
    try:
        assert await migrate(conn, [directory]) == ["0001_a.sql", "0002_b.sql"]
        assert await migrate(conn, [directory]) == []
        assert await conn.fetchval("SELECT count(*) FROM a") == 1
    finally:
        await conn.close()


async def test_two_processes_at_once_apply_each_file_once(scratch):
    connect, directory = scratch
    conns = [await connect() for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(conn, [directory]) for conn in conns))
        assert sorted(name for applied in results for name in applied) == ["0001_a.sql", "0002_b.sql"]
        assert await conns[0].fetchval("SELECT count(*) FROM a") == 1
    finally:
        for conn in conns:
            await conn.close()


async def test_a_failing_file_leaves_no_trace_and_stops_the_run(scratch):
    connect, directory = scratch
    (directory / "0003_bad.sql").write_text("CREATE TABLE c (x int); SELECT no_such_function();")
    (directory / "0004_after.sql").write_text("CREATE TABLE d (x int);")
    conn = await connect()
    try:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await migrate(conn, [directory])
        names = [row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")]
        assert names == ["0001_a.sql", "0002_b.sql"]
        assert await conn.fetchval("SELECT to_regclass('c')") is None
        assert await conn.fetchval("SELECT to_regclass('d')") is None
    finally:
        await conn.close()


async def test_the_plugins_migrations_are_applied_in_name_order_with_the_projects(migrated):
    conn = await asyncpg.connect(migrated)
    try:
        names = [
            row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations ORDER BY applied_at, name")
        ]
        # The example's 0001_users.sql first, though its folder comes after sign-in's and the jobs' in MIGRATIONS.
        expected = [
            "0001_users.sql",
            "0002_sign_in.sql",
            "0003_sign_in_counts.sql",
            "0004_jobs.sql",
            "0005_accounts.sql",
            "0005_accounts_email_change.sql",
        ]
        assert names == [*expected, "0009_job_runs.sql"]
        assert await conn.fetchval("SELECT to_regclass('users')") == "users"
        assert await conn.fetchval("SELECT to_regclass('sign_in_counts')") == "sign_in_counts"
    finally:
        await conn.close()
