"""A real Postgres for the tests (TEST_DATABASE_URL, or a throwaway server), and the app served by real uvicorn."""

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import uvicorn

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.migrate import migrate
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.web import App


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    """TEST_DATABASE_URL when set (every table but schema_migrations is emptied!), else a Postgres of this session."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver  # ships Postgres binaries in its wheel, and runs as root as well

    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
async def migrated(database_url) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return database_url


# Every table but the migrations' record, so a new table needs nothing here whatever its foreign keys.
TABLES = """
SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND tablename <> 'schema_migrations'
"""


@pytest.fixture
async def conn(migrated) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database, every table emptied but schema_migrations."""
    conn = await asyncpg.connect(migrated)
    try:
        tables = [row[0] for row in await conn.fetch(TABLES)]
        if tables:  # one statement for all, CASCADE for what references them: no order to get right
            await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        yield conn
    finally:
        # Even when emptying fails: an unclosed connection ends the run in ResourceWarnings that hide the error.
        await conn.close()


class Role:
    """A login role of a test's own, with every right on the users table: one a test may refuse, restrict or cut off."""

    def __init__(self, database_url: str, name: str, password: str) -> None:
        self.name, self.password = name, password
        parts = urlsplit(database_url)
        where = parts.netloc.rpartition("@")[2]
        self.url = parts._replace(netloc=f"{name}:{password}@{where}").geturl()


@pytest.fixture
async def role(migrated, conn) -> AsyncIterator[Role]:
    """A role of the test's own on the test database (dropped after the test), and the URL to connect as it."""
    name, password = f"role_{secrets.token_hex(4)}", secrets.token_hex(12)
    await conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    await conn.execute(f"GRANT ALL ON users TO {name}")
    yield Role(migrated, name, password)
    await conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'")
    await conn.execute(f"DROP OWNED BY {name}")
    await conn.execute(f"DROP ROLE {name}")


def settings_for(database_url: str, **overrides) -> Settings:
    """Settings as the environment would give them, with small pools for tests."""
    environ = {"DATABASE_URL": database_url, "POOL_MIN_SIZE": "1", "POOL_MAX_SIZE": "4"}
    environ.update({key.upper(): str(value) for key, value in overrides.items()})
    return Settings.from_env(environ, env_file=None)


@pytest.fixture(scope="session")
async def serve() -> AsyncIterator:
    """`await serve(database_url, **settings)` runs the app under uvicorn on a free port and
    returns its URL; every server started is stopped when the session ends. `serve(app=app)`
    runs an app a test has built itself."""
    running = []

    async def serve(database_url: str | None = None, *, app: App | None = None, **overrides) -> str:
        app = app or create_app(settings_for(database_url, **overrides))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        task = asyncio.create_task(server.serve())
        running.append((server, task))
        while not server.started:
            if task.done():
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    yield serve
    for server, task in running:
        server.should_exit = True
        await task


@pytest.fixture
def new_app(migrated) -> Callable[..., App]:
    """`new_app(**settings)`: an app of the test database, for a test to add routes and hooks to."""
    return lambda **overrides: create_app(settings_for(migrated, **overrides))


@pytest.fixture(scope="session")
async def base_url(migrated, serve) -> str:
    return await serve(migrated)


@pytest.fixture
async def client(base_url, conn) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the running service, over empty tables."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        yield client


@pytest.fixture
def closed_port() -> int:
    """A TCP port on loopback where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
