"""A real Postgres for the tests (TEST_DATABASE_URL, or a throwaway server), and the app served by real uvicorn."""

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import httpx
import pytest
import uvicorn

from {{ cookiecutter.package_name }} import logs
from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.migrate import migrate
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.web import App


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    """TEST_DATABASE_URL when set (its tables are emptied!), else a Postgres started for this session."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver  # ships Postgres binaries in its wheel, and runs as root as well

    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_setup(item):
    return (yield from _logs_written_while_captured())


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item):
    return (yield from _logs_written_while_captured())


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item):
    return (yield from _logs_written_while_captured())


def _logs_written_while_captured():
    # The log writer's thread writes a few milliseconds late: wait for it inside each test phase, while
    # pytest captures stderr, so that lines do not land among its report lines.
    try:
        return (yield)
    finally:
        logs.writer.flush()


@pytest.fixture(scope="session")
async def migrated(database_url) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return database_url


@pytest.fixture
async def conn(migrated) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database, with the users table emptied."""
    conn = await asyncpg.connect(migrated)
    await conn.execute("TRUNCATE users RESTART IDENTITY")
    yield conn
    await conn.close()


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
        # log_config=None: uvicorn keeps the app's logging (JSON lines), as when served from the command line.
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", log_config=None)
        server = uvicorn.Server(config)
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
    """An HTTP client of the running service, over an empty users table."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        yield client


@pytest.fixture
def closed_port() -> int:
    """A TCP port on loopback where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
