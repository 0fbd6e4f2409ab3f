"""A real Postgres for the tests (TEST_DATABASE_URL, or a throwaway server), the example service (example.py)
served by real uvicorn, and clients signed in as an admin and as a user."""

import asyncio
import contextlib
import email
import email.policy
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller

from example import MIGRATIONS, Settings, create_app
from heaven_plugins import logs
from heaven_plugins.app import App
from heaven_plugins.migrate import migrate
from heaven_plugins.postgres import Postgres
from heaven_plugins.server import Limits, options
from heaven_plugins.signin.passwords import Passwords
from replication import Node, Template

SECRET = secrets.token_urlsafe(32)
# The tests hash hundreds of passwords: at argon2's real cost (test_passwords.py) that would take minutes.
FAST_HASHING = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "1024"}
PASSWORD = "correct horse battery staple"
ADMIN = "admin@example.com"
# Where example.py is, so that a child process serving it finds it.
SOURCE = str(Path(__file__).parent)


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


@pytest.fixture
async def db(migrated, conn) -> AsyncIterator[Postgres]:
    """The Postgres plugin of the test database, started, over empty tables."""
    db = Postgres(migrated, min_size=1, max_size=2)
    await db.startup()
    yield db
    await db.shutdown()


class Role:
    """A login role of a test's own, with every right on the tables (users, sign-in's): one a test may refuse,
    restrict or cut off."""

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
    # Every table, not only users: a signed-in request reads sign-in's tables (revoked tokens) too.
    await conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}")
    yield Role(migrated, name, password)
    # An app served with it may still be running, and reconnects: refuse its logins, then end its sessions.
    await conn.execute(f"ALTER ROLE {name} NOLOGIN")
    # pg_terminate_backend only asks: wait (bounded) until the role's sessions are gone, or DROP ROLE fails.
    deadline = time.monotonic() + 5
    while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE usename = $1", name):
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name)
        assert time.monotonic() < deadline, f"sessions of {name} still open"
        await asyncio.sleep(0.05)
    await conn.execute(f"DROP OWNED BY {name}")
    await conn.execute(f"DROP ROLE {name}")


def environment(database_url: str, **overrides) -> dict[str, str]:
    """The variables the app reads: small pools, the session's token secret, cheap password hashing."""
    environ = {"DATABASE_URL": database_url, "POOL_MIN_SIZE": "1", "POOL_MAX_SIZE": "4", "TOKEN_SECRET": SECRET}
    environ.update(FAST_HASHING)
    environ.update({key.upper(): str(value) for key, value in overrides.items()})
    return environ


def settings_for(database_url: str, **overrides) -> Settings:
    """Settings as the environment would give them (`environment`)."""
    return Settings.from_env(environment(database_url, **overrides))


@pytest.fixture
def log_lines(capsys):
    """`log_lines()`: what the service wrote to stderr since the last call, each line parsed as JSON."""

    def lines() -> list[dict]:
        assert logs.writer.flush(), "the log writer did not catch up within its bound"
        return [json.loads(line) for line in capsys.readouterr().err.splitlines()]

    return lines


class Servers:
    """Apps served by uvicorn on free ports of loopback, in this event loop, until `stop_all()`."""

    def __init__(self) -> None:
        self.running: list[tuple[uvicorn.Server, asyncio.Task]] = []

    async def serve(self, database_url: str | None = None, *, app: App | None = None, **overrides) -> str:
        """Serve the example app of `database_url` under these settings, or `app`; its URL."""
        app = app or create_app(settings_for(database_url, **overrides))
        # The edge's limits and proxy trust (server.py) as the Dockerfile serves them, from the same overrides.
        edge = options(Limits.from_env(environment(database_url, **overrides), env_file=None))
        # log_config=None: uvicorn keeps the app's logging (JSON lines), as when served from the command line.
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", log_config=None, **edge)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        self.running.append((server, task))
        while not server.started:
            if task.done():
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    async def stop_all(self) -> None:
        for server, task in self.running:
            server.should_exit = True
            await task
        self.running.clear()
        # An App's shutdown has the log writer write each line at once from then on (logs.write_through), for a
        # process that is ending; this one goes on serving the session's other apps, which batch their lines.
        logs.writer.write_through = False


@pytest.fixture
async def serve() -> AsyncIterator:
    """`await serve(database_url, **settings)` runs the app under uvicorn on a free port and
    returns its URL; `serve(app=app)` runs an app a test has built itself. Each is stopped after the
    test, its connections to Postgres closed: a whole run's servers would exceed max_connections."""
    servers = Servers()
    yield servers.serve
    await servers.stop_all()


@pytest.fixture
def new_app(migrated) -> Callable[..., App]:
    """`new_app(**settings)`: an app of the test database, for a test to add routes and hooks to."""
    return lambda **overrides: create_app(settings_for(migrated, **overrides))


@pytest.fixture(scope="session")
async def base_url(migrated) -> AsyncIterator[str]:
    """The URL of the example app of the test database, served for the whole session."""
    servers = Servers()
    yield await servers.serve(migrated)
    await servers.stop_all()


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


MAKE_ADMIN = """
INSERT INTO users (email, name, password_hash, is_admin) VALUES ($1, 'Admin', $2, true)
ON CONFLICT (lower(email)) DO UPDATE SET password_hash = excluded.password_hash, is_admin = true, is_active = true
"""


async def make_admin(conn: asyncpg.Connection, email: str = ADMIN, password: str = PASSWORD) -> None:
    """An admin with this email and password, made or made again (a project makes its first admin by a command)."""
    hashed = Passwords(int(FAST_HASHING["ARGON2_TIME_COST"]), int(FAST_HASHING["ARGON2_MEMORY_KIB"])).hash_now(password)
    await conn.execute(MAKE_ADMIN, email, hashed)


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


class Process:
    """The app under uvicorn in a process of its own, as it is deployed: one of several."""

    def __init__(self, database_url: str, log: Path, **overrides) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        # FORWARDED_ALLOW_IPS and --http as the Dockerfile has them.
        environ = {**os.environ, "PYTHONPATH": SOURCE, "FORWARDED_ALLOW_IPS": ""}
        environ.update(environment(database_url, **overrides))
        protocol = "heaven_plugins.server:HTTPProtocol"
        command = [sys.executable, "-m", "uvicorn", "example:main", "--factory", "--port", str(self.port)]
        command += ["--http", protocol]
        with log.open("wb") as output:  # from a folder without a .env
            self.process = subprocess.Popen(command, env=environ, cwd=log.parent, stdout=output, stderr=output)

    def wait_until_healthy(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"no 200 from /health within {timeout} s:\n{self.output()}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        return self.output()

    def output(self) -> str:
        """Everything the process printed so far: its log lines."""
        return self.log.read_text(errors="replace")


@pytest.fixture
def spawn(tmp_path) -> Iterator[Callable[..., Process]]:
    """`spawn(database_url, **settings)`: the app in a process of its own, healthy; stopped after the test."""
    started: list[Process] = []

    def spawn(database_url: str, **overrides) -> Process:
        process = Process(database_url, tmp_path / f"uvicorn-{len(started)}.log", **overrides)
        started.append(process)
        process.wait_until_healthy()
        return process

    yield spawn
    for process in started:
        process.stop()


@pytest.fixture
def closed_port() -> int:
    """A TCP port on loopback where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# A real primary and streaming standby (replication.py), for the failover and read-replica tests.
PEERS = "SELECT count(*) > 0 FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = $1"


@pytest.fixture(scope="session")
def template() -> Iterator[Template]:
    """A primary's data directory with the example's database, `app`, migrated: each pair is a copy of it."""
    template = Template()
    template.prepare(lambda url: asyncio.run(_migrate(url("postgres"), url("app"))))
    yield template
    template.remove()


async def _migrate(server: str, database: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute("CREATE DATABASE app")
    finally:
        await conn.close()
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn, MIGRATIONS)
    finally:
        await conn.close()


@pytest.fixture
async def pair(template) -> AsyncIterator[Callable]:
    """`await pair(synchronous=True, standby="")`: a new primary, and its streaming standby (`standby`: lines for its
    settings); synchronous, a commit is acknowledged once the standby has it on disk."""
    nodes: list[Node] = []

    async def make(synchronous: bool = True, standby: str = "") -> tuple[Node, Node]:
        primary = await asyncio.to_thread(template.primary)
        nodes.append(primary)
        replica = await asyncio.to_thread(template.standby, primary, standby)
        nodes.append(replica)
        conn = await asyncpg.connect(primary.url("app"))
        try:
            if synchronous:  # only now: with no standby yet, every commit would wait for one
                await conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                await conn.execute("SELECT pg_reload_conf()")
            await eventually(lambda: conn.fetchval(PEERS, "sync" if synchronous else "async"), within=10)
        finally:
            await conn.close()
        return primary, replica

    yield make
    for node in nodes:
        node.stop("immediate")


class WorkerProcess:
    """tests/jobs_worker.py in a process of its own, as a project's `python -m <package>.worker` runs."""

    def __init__(self, database_url: str, log: Path, **settings) -> None:
        environ = {**os.environ, "PYTHONPATH": SOURCE, "DATABASE_URL": database_url}
        environ.update({key.upper(): str(value) for key, value in settings.items()})
        self.log = log
        with log.open("wb") as output:
            command = [sys.executable, str(Path(SOURCE) / "jobs_worker.py")]
            self.process = subprocess.Popen(command, env=environ, stdout=output, stderr=output)

    def output(self) -> str:
        """Everything the worker printed so far: its log lines."""
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send `sig` (unless it ended already) and wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


class Mailbox:
    """What a real SMTP server (aiosmtpd, on a thread of its own) received: each message, parsed."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[list[str]] = []  # each message's recipients, as RCPT TO gave them

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.envelopes.append(list(envelope.rcpt_tos))
        return "250 OK"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        """The messages sent to `address`, oldest first."""
        return [message for message in self.messages if message["To"] == address]


@pytest.fixture(scope="session")
def smtp() -> Iterator[tuple[Mailbox, int]]:
    """An SMTP server on a free port of loopback for the session: its mailbox and its port."""
    mailbox = Mailbox()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()
