"""A real Postgres for the tests (TEST_DATABASE_URL, or a throwaway server), the app served by real uvicorn,
and clients signed in as an admin and as a user. The machinery has its own tests, in heaven-plugins."""

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn
from heaven_plugins import logs
from heaven_plugins.app import App
from heaven_plugins.migrate import migrate
from heaven_plugins.signin.passwords import Passwords

import {{ cookiecutter.package_name }}
from {{ cookiecutter.package_name }}.admin import grant
from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.migrate import MIGRATIONS
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.users import NewUser

SECRET = secrets.token_urlsafe(32)
# The tests hash hundreds of passwords: at argon2's real cost (heaven-plugins' test_passwords.py) that
# would take minutes.
FAST_HASHING = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "1024"}
PASSWORD = "correct horse battery staple"
ADMIN = "admin@example.com"
# Where the package is imported from, so that a child process finds it whether installed or not.
SOURCE = str(Path({{ cookiecutter.package_name }}.__file__).parents[1])


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
    # The log writer writes a few milliseconds late: wait for it inside each test phase, while
    # pytest captures stderr, so that lines do not land among its report lines.
    try:
        return (yield)
    finally:
        logs.writer.flush()


@pytest.fixture(scope="session")
async def migrated(database_url) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, MIGRATIONS)
    finally:
        await conn.close()
    return database_url


# Every table but the migrations' record, so a new table needs nothing here whatever its foreign keys.
TABLES = """
SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND tablename <> 'schema_migrations'
"""


async def empty(conn: asyncpg.Connection, tables: list[str], attempts: int = 5) -> None:
    """TRUNCATE every table. The session's apps read sign-in's tables once a second, and a read holding one
    table while it waits for another can deadlock with TRUNCATE's locks: Postgres then ends one of the two,
    and running it again is the remedy. Bounded: a deadlock that keeps coming is a failure."""
    for attempt in range(attempts):
        try:
            await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
            return
        except asyncpg.DeadlockDetectedError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05)


@pytest.fixture
async def conn(migrated) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database, every table emptied but schema_migrations."""
    conn = await asyncpg.connect(migrated)
    try:
        tables = [row[0] for row in await conn.fetch(TABLES)]
        if tables:  # one statement for all, CASCADE for what references them: no order to get right
            await empty(conn, tables)
        yield conn
    finally:
        # Even when emptying fails: an unclosed connection ends the run in ResourceWarnings that hide the error.
        await conn.close()


def environment(database_url: str, **overrides) -> dict[str, str]:
    """The variables the app reads: small pools, the session's token secret, cheap password hashing."""
    environ = {"DATABASE_URL": database_url, "POOL_MIN_SIZE": "1", "POOL_MAX_SIZE": "4", "TOKEN_SECRET": SECRET}
    environ.update(FAST_HASHING)
    environ.update({key.upper(): str(value) for key, value in overrides.items()})
    return environ


def admin_command(database_url: str, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess:
    """`python -m <package>.admin ARGS` as the README runs it, the password on stdin."""
    return subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}.admin", *args],
        input=f"{password}\n",
        env={"PYTHONPATH": SOURCE, **environment(database_url)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def settings_for(database_url: str, **overrides) -> Settings:
    """Settings as the environment would give them (`environment`)."""
    return Settings.from_env(environment(database_url, **overrides), env_file=None)


@pytest.fixture
def log_lines(capsys):
    """`log_lines()`: what the service wrote to stderr since the last call, each line parsed as JSON."""

    def lines() -> list[dict]:
        assert logs.writer.flush(), "the log writer did not catch up within its bound"
        return [json.loads(line) for line in capsys.readouterr().err.splitlines()]

    return lines


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
    """An HTTP client of the running service, over empty tables, signed in as nobody."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        yield client


async def sign_up(client: httpx.AsyncClient, email: str, name: str = "Someone", password: str = PASSWORD) -> dict:
    """POST /users: the new user."""
    response = await client.post("/users", json={"email": email, "name": name, "password": password})
    assert response.status_code == 201, response.text
    return response.json()


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    """POST /auth/token: the `Authorization` header's value for the new token."""
    response = await client.post("/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return f"Bearer {response.json()['access_token']}"


async def eventually(condition: Callable, within: float = 5.0) -> float:
    """Await `condition()` every 20 ms until it is true; seconds it took, or fail after `within` seconds."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < within, f"not within {within} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def make_admin(conn: asyncpg.Connection, email: str = ADMIN, password: str = PASSWORD) -> None:
    """What the admin command does (test_admin.py runs the command itself)."""
    hashed = Passwords(int(FAST_HASHING["ARGON2_TIME_COST"]), int(FAST_HASHING["ARGON2_MEMORY_KIB"])).hash_now(password)
    await grant(conn, NewUser(email, "Admin", password), hashed)


@pytest.fixture
async def admin(base_url, conn) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in as an admin (user 1), over an otherwise empty users table."""
    await make_admin(conn)
    async with httpx.AsyncClient(base_url=base_url) as http:
        http.headers["Authorization"] = await sign_in(http, ADMIN)
        yield http


@pytest.fixture
async def user(base_url, conn) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in as an ordinary user, user@example.com."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        await sign_up(http, "user@example.com", "User")
        http.headers["Authorization"] = await sign_in(http, "user@example.com")
        yield http


@pytest.fixture
def closed_port() -> int:
    """A TCP port on loopback where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
