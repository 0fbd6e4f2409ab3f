"""The baked service under load, faults and hostile input, on real uvicorn and Postgres: it answers, recovers and
loses nothing. Every figure a test measures is printed at the end of the run (see `figures` in conftest.py)."""

import asyncio
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import asyncpg
import httpx
import pytest
from conftest import FAST_HASHING, admin_headers, free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Small pool, many clients: the pool is the bottleneck the tests push on. Passwords are hashed cheaply
# (FAST_HASHING): the tests create users by the hundred to load the pool, not the password threads.
POOL = {"POOL_MIN_SIZE": "2", "POOL_MAX_SIZE": "4", "UVICORN_ACCESS_LOG": "false", **FAST_HASHING}
PASSWORD = "a long enough password"
POOL_SIZE = 4
CLIENTS = 40  # 10x the pool


def migrate(project, url: str) -> str:
    result = project.run(sys.executable, "-m", f"{project.package}.migrate", DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    return url


@pytest.fixture
def database(default_project, new_database) -> str:
    """A fresh database on the session's server, with the project's migrations applied."""
    return migrate(default_project, new_database())


@pytest.fixture
def db_name(database) -> str:
    return urlsplit(database).path.lstrip("/")


# --- driving traffic ----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    method: str
    path: str
    started: float  # time.monotonic()
    seconds: float
    status: int | None  # None: no HTTP answer at all (refused, reset, timed out)
    body: bytes | str  # the body, or the transport error's name


class Connection:
    """One keep-alive HTTP/1.1 connection, spoken by hand: httpx's async pool is slower than the server and
    starves some of its connections for seconds when there are dozens, which would be measured as the server's."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")
        self.extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, int(self.port))
        reader, writer = self.streams
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n{self.extra}"
        writer.write(f"{head}Content-Type: application/json\r\n\r\n".encode() + body)
        status = int((await reader.readuntil(b"\r\n")).split()[1])
        headers = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            headers[name.lower()] = value.strip().lower()
        if headers.get(b"transfer-encoding") != b"chunked":
            return status, await reader.readexactly(int(headers.get(b"content-length", 0)))
        content = b""
        while size := int(await reader.readuntil(b"\r\n"), 16):
            content += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return status, content

    def close(self) -> None:
        if self.streams:
            self.streams[1].close()
            self.streams = None


async def drive(url, make_request, *, clients, seconds, limit, stop=None, timeout=10.0, headers=None) -> list[Outcome]:
    """`clients` connections each send `make_request(n)` (method, path, json) one after another until `seconds`
    pass, `limit` requests in all are sent, or `stop` is set. A connection that fails is opened again. Every
    request carries `headers` (an admin's token)."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + seconds
    numbers = itertools.count()

    async def client() -> None:
        connection = Connection(url, headers)
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            n = next(numbers)
            if n >= limit:
                break
            method, path, body = make_request(n)
            started = time.monotonic()
            try:
                payload = b"" if body is None else json.dumps(body).encode()
                status, content = await asyncio.wait_for(connection.request(method, path, payload), timeout)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                connection.close()
                status, content = None, type(exc).__name__
            outcomes.append(Outcome(method, path, started, time.monotonic() - started, status, content))
        connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return outcomes


def mixed(seeded: int, prefix: str):
    """Reads and writes in turn: list, get, create, rename (an admin's requests but for the sign-ups)."""

    def make_request(n: int):
        user_id = n % seeded + 1
        return [
            ("GET", "/users?limit=20", None),
            ("GET", f"/users/{user_id}", None),
            ("POST", "/users", {"email": f"{prefix}{n}@example.com", "name": f"Load {n}", "password": PASSWORD}),
            ("PATCH", f"/users/{user_id}", {"name": f"Renamed {n}"}),
        ][n % 4]

    return make_request


def seed(url: str, count: int) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        for i in range(count):
            new = {"email": f"seed{i}@example.com", "name": f"Seed {i}", "password": PASSWORD}
            assert http.post("/users", json=new).status_code == 201


def tally(outcomes) -> str:
    return ", ".join(
        f"{status or 'socket error'}: {n}" for status, n in sorted(Counter(o.status or 0 for o in outcomes).items())
    )


def unavailable(outcome: Outcome) -> bool:
    """A JSON 503 saying the database is away (/health says it in its own words)."""
    if outcome.status != 503:
        return False
    body = json.loads(outcome.body)
    return body.get("error") == "database_unavailable" or body.get("database") == "unreachable"


async def sample(every: float, stop: asyncio.Event, measure) -> list:
    samples = []
    while not stop.is_set():
        samples.append((time.monotonic(), await measure()))
        await asyncio.sleep(every)
    return samples


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def connections(conn, database: str, waiting_on_a_lock: bool = False) -> int:
    return await conn.fetchval(
        # Client backends only: an autovacuum worker tidying the table under load is no connection of the pool's.
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend' AND (NOT $2 OR wait_event_type = 'Lock')",
        database,
        waiting_on_a_lock,
    )


async def eventually(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.02)


# --- load ---------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sustained_load_is_served_within_the_pool_and_memory_stays_flat(
    default_project, database, db_name, postgres_url, service, figures
):
    svc = service(default_project, database, ACQUIRE_TIMEOUT="2", **POOL)
    # The admin first: the admin command's own connection is long gone when the pool is sampled.
    admin = await asyncio.to_thread(admin_headers, default_project, database, svc.url)
    await asyncio.to_thread(seed, svc.url, 50)
    monitor = await asyncpg.connect(postgres_url)
    stop = asyncio.Event()
    try:
        pool = asyncio.create_task(sample(0.05, stop, lambda: connections(monitor, db_name)))
        memory = asyncio.create_task(sample(0.1, stop, lambda: asyncio.sleep(0, resident_kib(svc.process.pid))))
        started = time.monotonic()
        outcomes = await drive(svc.url, mixed(50, "load"), clients=CLIENTS, seconds=6, limit=12_000, headers=admin)
        stop.set()
        pool_sizes, rss = [size for _, size in await pool], await memory
    finally:
        await monitor.close()
    elapsed = time.monotonic() - started

    assert all(o.status in (200, 201) for o in outcomes), tally(outcomes)
    assert max(pool_sizes) <= POOL_SIZE + 1  # the pool's, and the one connection /health asks over
    slowest = max(o.seconds for o in outcomes)
    assert slowest < 2, "a request waited longer than the acquire timeout"
    # Warm-up is the first third; the last two thirds are two windows of equal length.
    third = elapsed / 3
    window = [max(kib for at, kib in rss if lo <= at - started < lo + third) for lo in (third, 2 * third)]
    growth = window[1] - window[0]
    assert growth < 4096, f"resident memory grew {growth} KiB between the windows"
    figures(
        f"load: {len(outcomes)} requests over {CLIENTS} connections in {elapsed:.1f} s "
        f"({len(outcomes) / elapsed:.0f}/s; {tally(outcomes)}), 0 socket errors; "
        f"at most {max(pool_sizes)} server connections ({POOL_SIZE} in the pool, 1 for /health) over "
        f"{len(pool_sizes)} samples; "
        f"slowest {slowest * 1000:.0f} ms; RSS {window[0] / 1024:.1f} -> {window[1] / 1024:.1f} MiB ({growth:+d} KiB)"
    )


@pytest.mark.asyncio
async def test_a_saturated_pool_answers_503_within_the_acquire_timeout(
    default_project, database, db_name, postgres_url, service, figures
):
    acquire_timeout, held = 1.0, 2.5
    svc = service(default_project, database, ACQUIRE_TIMEOUT=str(acquire_timeout), **POOL)
    await asyncio.to_thread(seed, svc.url, 10)
    admin = await asyncio.to_thread(admin_headers, default_project, database, svc.url)
    locker = await asyncpg.connect(database)
    try:
        # Every query on users now blocks: the pool's connections are all taken and the rest of the clients wait.
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        load = asyncio.create_task(
            drive(svc.url, mixed(10, "busy"), clients=20, seconds=held + 1, limit=5_000, headers=admin)
        )
        await asyncio.sleep(held)
        await lock.rollback()
        outcomes = await load
    finally:
        await locker.close()

    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) <= {200, 201, 503}, tally(outcomes)
    refused = [o for o in outcomes if o.status == 503]
    served = [o for o in outcomes if o.status != 503]
    assert refused and all(unavailable(o) for o in refused)
    assert all(acquire_timeout - 0.05 <= o.seconds < acquire_timeout + 0.5 for o in refused)
    assert served and max(o.seconds for o in served) < held + 1
    figures(
        f"saturated: pool {POOL_SIZE} blocked {held} s, {len(outcomes)} requests ({tally(outcomes)}); "
        f"503s answered in {min(o.seconds for o in refused):.2f}-{max(o.seconds for o in refused):.2f} s "
        f"(acquire timeout {acquire_timeout} s); slowest served {max(o.seconds for o in served):.2f} s; none hung"
    )


# --- nothing lost -------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_concurrent_creates_lose_nothing_and_duplicates_get_one_201(default_project, database, service, figures):
    svc = service(default_project, database, **POOL)
    distinct = await drive(
        svc.url,
        lambda n: ("POST", "/users", {"email": f"user{n}@example.com", "name": f"User {n}", "password": PASSWORD}),
        clients=CLIENTS,
        seconds=20,
        limit=600,
    )
    twins = 5
    variants = ["dup{}@example.com", "DUP{}@example.com", "dup{}@EXAMPLE.COM", "Dup{}@Example.Com"]
    duplicates = await drive(
        svc.url,
        lambda n: (
            "POST",
            "/users",
            {"email": variants[n // twins % 4].format(n % twins), "name": "Twin", "password": PASSWORD},
        ),
        clients=CLIENTS,
        seconds=20,
        limit=twins * 20,
    )

    conn = await asyncpg.connect(database)
    try:
        rows = {(row["id"], row["email"]) for row in await conn.fetch("SELECT id, email FROM users")}
    finally:
        await conn.close()
    assert len(distinct) == 600 and all(o.status == 201 for o in distinct), tally(distinct)
    created = {(body["id"], body["email"]) for body in (json.loads(o.body) for o in distinct)}
    assert len(created) == 600
    statuses = Counter(o.status for o in duplicates)
    assert statuses == {201: twins, 409: twins * 19}, tally(duplicates)
    twin_rows = {(i, e) for i, e in rows if e.lower().startswith("dup")}
    assert len(twin_rows) == twins and {e.lower() for _, e in twin_rows} == {
        f"dup{n}@example.com" for n in range(twins)
    }
    assert rows == created | twin_rows
    figures(
        f"nothing lost: {len(distinct)} concurrent creates over {CLIENTS} connections, {len(created)} 201s, "
        f"{len(rows)} rows checked, every 201 has its row and every row its 201; "
        f"{len(duplicates)} duplicate creates of {twins} emails: {statuses[201]} 201s, {statuses[409]} 409s"
    )


# --- Postgres restarted under load --------------------------------------------------------------------------------


class RestartablePostgres:
    """A Postgres of this module's own, on a loopback port and with a password, that a test can stop and start."""

    def __init__(self) -> None:
        import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.root = Path(tempfile.mkdtemp(prefix="pg-restart-"))
        self.data, self.port = self.root / "data", free_port()
        self.password = secrets.token_urlsafe(18)
        self.user = None
        if os.geteuid() == 0:  # initdb refuses to run as root; pgserver keeps a system user for it
            from pgserver.utils import ensure_user_exists

            self.user = ensure_user_exists("pgserver").pw_name
            shutil.chown(self.root, self.user)
        (self.root / "password").write_text(self.password)
        self._run(
            "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={self.root / 'password'}",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\n"
            )
        self.start()

    def _run(self, program: str, *args) -> None:
        # pg_ctl leaves the server holding whatever output it was given: a file, never a pipe to wait on.
        with (self.root / "ctl.log").open("a") as log:
            subprocess.run(
                [self.bin / program, *map(str, args)], user=self.user, stdout=log, stderr=log, check=True, timeout=60
            )

    def start(self) -> None:
        self._run("pg_ctl", "start", "-w", "-t", "30", "-D", self.data, "-l", self.root / "server.log")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", self.data)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        return f"postgresql://postgres:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def restartable() -> Iterator[RestartablePostgres]:
    server = RestartablePostgres()
    yield server
    server.remove()


@pytest.fixture
def restartable_database(default_project, restartable) -> str:
    name = f"restart_{secrets.token_hex(6)}"

    async def create() -> None:
        conn = await asyncpg.connect(restartable.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return migrate(default_project, restartable.url(name))


@pytest.mark.asyncio
async def test_postgres_restarted_under_load_means_503s_then_recovery_without_a_restart(
    default_project, restartable, restartable_database, service, figures
):
    svc = service(default_project, restartable_database, ACQUIRE_TIMEOUT="1", QUERY_TIMEOUT="2", **POOL)
    await asyncio.to_thread(seed, svc.url, 10)
    admin = await asyncio.to_thread(admin_headers, default_project, restartable_database, svc.url)
    traffic = mixed(10, "restart")
    stop = asyncio.Event()
    load = asyncio.create_task(
        drive(
            svc.url,
            lambda n: ("GET", "/health", None) if n % 5 == 4 else traffic(n),
            clients=12,
            seconds=30,
            limit=200_000,
            stop=stop,
            headers=admin,
        )
    )
    await asyncio.sleep(1)
    down = time.monotonic()
    await asyncio.to_thread(restartable.stop)
    await asyncio.sleep(2)
    await asyncio.to_thread(restartable.start)
    up = time.monotonic()
    async with httpx.AsyncClient(base_url=svc.url, timeout=5) as http:
        while (await http.get("/health")).status_code != 200:
            assert time.monotonic() - up < 10, "not recovered 10 s after Postgres came back"
            await asyncio.sleep(0.02)
    recovered = time.monotonic()
    await asyncio.sleep(1)
    stop.set()
    outcomes = await load

    before = [o for o in outcomes if o.started + o.seconds < down]
    outage = [o for o in outcomes if down <= o.started + o.seconds and o.started < recovered]
    after = [o for o in outcomes if o.started >= recovered]
    assert all(o.status in (200, 201) for o in before + after), tally(before + after)
    assert all(o.status in (200, 201) or unavailable(o) for o in outage), tally(outage)
    assert any(o.path == "/health" and unavailable(o) for o in outage), "/health did not say 503 during the outage"
    slowest = max(o.seconds for o in outcomes)
    assert slowest < 1 + 2 + 1, "a request hung"
    assert "unhandled error" not in svc.output  # what the app logs with a 500
    assert restartable.password not in svc.output
    assert not [o for o in outcomes if restartable.password.encode() in o.body]
    figures(
        f"Postgres restart: {len(outcomes)} requests over 12 connections; outage {up - down:.1f} s: "
        f"{len(outage)} requests ({tally(outage)}), every failure a JSON 503, /health 503; "
        f"recovered {recovered - up:.2f} s after Postgres was back, no restart; after: {len(after)} requests "
        f"({tally(after)}); slowest {slowest:.2f} s; password in 0 of {len(svc.lines)} log lines and 0 bodies"
    )


def test_a_wrong_password_stops_uvicorn_in_one_line_that_never_shows_it(default_project, restartable, service):
    wrong = secrets.token_urlsafe(18)
    svc = service(default_project, restartable.url(password=wrong), start=False, CONNECT_TIMEOUT="3")
    svc.start(wait=False)
    svc.process.wait(timeout=15)
    output = svc.stop()
    assert svc.process.returncode == 3, output
    lines = [line for line in output.splitlines() if "cannot connect to Postgres" in line]
    assert len(lines) == 1 and "InvalidPasswordError" in lines[0], output
    assert wrong not in output and restartable.password not in output


# --- graceful shutdown --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sigterm_under_load_finishes_requests_in_flight_then_closes_the_pool(
    default_project, database, db_name, postgres_url, service, figures
):
    svc = service(default_project, database, ACQUIRE_TIMEOUT="10", **POOL)
    admin = await asyncio.to_thread(admin_headers, default_project, database, svc.url)
    await asyncio.to_thread(seed, svc.url, 5)
    locker, monitor = await asyncpg.connect(database), await asyncpg.connect(postgres_url)
    try:
        # Hold the users table so that the requests are still in flight when the signal comes: the pool's
        # connections wait on the lock, the other requests wait for a connection.
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        load = asyncio.create_task(drive(svc.url, mixed(5, "term"), clients=16, seconds=30, limit=16, headers=admin))

        async def pool_blocked() -> bool:
            return await connections(monitor, db_name, waiting_on_a_lock=True) == POOL_SIZE

        await eventually(pool_blocked)
        await asyncio.sleep(0.3)  # the requests beyond the pool's reach the server and wait for a connection
        svc.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert svc.process.poll() is None, "uvicorn ended with requests in flight"
        await lock.rollback()
        await locker.close()
        outcomes = await load
        await asyncio.to_thread(svc.process.wait, 15)

        async def pool_closed() -> bool:
            return await connections(monitor, db_name) == 0

        await eventually(pool_closed)
    finally:
        await locker.close()
        await monitor.close()
    output = svc.stop()
    assert all(o.status in (200, 201) for o in outcomes), tally(outcomes)
    assert svc.process.returncode == -signal.SIGTERM, output
    assert "Application shutdown complete" in output and "disconnected from Postgres" in output
    figures(
        f"SIGTERM: {len(outcomes)} requests in flight ({tally(outcomes)}), all completed; pool closed "
        f"(0 server connections left); exit status {svc.process.returncode} (SIGTERM re-raised after a clean shutdown)"
    )


# --- hostile input ------------------------------------------------------------------------------------------------

MAX_BODY = 65_536
# SQL metacharacters, quoting, format specifiers, non-ASCII, bidi and zero-width characters: all valid values.
HOSTILE_NAMES = [
    "'; DROP TABLE users; --",
    "Robert'); DELETE FROM users WHERE ('1'='1",
    "\\'; SELECT pg_sleep(10); --",
    "%s %_ $1 $$ E'\\x00' ::text {0}",
    "名前 Ünïcødé 🚀",
    "\u202eevil\u200b",
    "NULL",
]
# SQL's quotes, comments, wildcards and placeholders, all allowed in an address (a mail header's , ; " and \ are not).
HOSTILE_EMAILS = [
    "o'brien--@example.com",
    "''DROP-TABLE-users--'@example.com",
    "%_$1{0}@example.com",
    "ünï+名前@例え.jp",
    "NULL@example.com",
]
LONG = "9" * 5000
JSON_BODY = {"content-type": "application/json"}
# (what, method, path, body): each must be a 4xx JSON error. {id} is a user that exists.
BAD_REQUESTS = [
    ("malformed JSON", "POST", "/users", b"{oops"),
    ("empty body", "POST", "/users", b""),
    ("JSON null", "POST", "/users", b"null"),
    ("JSON array", "POST", "/users", b"[]"),
    ("not UTF-8", "POST", "/users", b'{"email": "\xff@example.com", "name": "X"}'),
    ("lone surrogate", "POST", "/users", b'{"email": "s@example.com", "name": "\\ud800"}'),
    ("NUL in a string", "POST", "/users", b'{"email": "n@example.com", "name": "a\\u0000b"}'),
    ("name a number", "POST", "/users", b'{"email": "t@example.com", "name": 5}'),
    ("huge integer", "POST", "/users", f'{{"email": "h@example.com", "name": "H", "is_active": {LONG}}}'.encode()),
    ("email a list", "POST", "/users", b'{"email": [], "name": "X"}'),
    ("missing field", "POST", "/users", b'{"email": "m@example.com"}'),
    ("unknown field", "POST", "/users", b'{"email": "u@example.com", "name": "U", "is_admin": true}'),
    ("name too long", "POST", "/users", json.dumps({"email": "l@example.com", "name": "x" * 101}).encode()),
    ("email too long", "POST", "/users", json.dumps({"email": "e" * 250 + "@x.com", "name": "E"}).encode()),
    ("deep nesting", "POST", "/users", b'{"email": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"),
    ("patch is_active null", "PATCH", "/users/{id}", b'{"is_active": null}'),
    ("patch name null", "PATCH", "/users/{id}", b'{"name": null}'),
    ("patch unknown field", "PATCH", "/users/{id}", b'{"id": 1}'),
    ("patch malformed", "PATCH", "/users/{id}", b"{"),
    *(
        (f"id {raw}", method, f"/users/{raw}", b"{}")
        for raw in ["1.5", "abc", "-1", "0", "9223372036854775808", LONG, "%00", "%ff", "1%2F2", "1;DROP"]
        for method in ("GET", "PATCH", "DELETE")
    ),
    # The seeded user's id, written otherwise than in plain digits: each names nothing.
    *(
        (f"id {raw}", method, f"/users/{raw}", b'{"name": "Twisted"}')
        for raw in ["+{id}", "0{id}", "{id}_0", "%20{id}", "{id}%0A", "%D9%A1", "%EF%BC%91"]
        for method in ("GET", "PATCH", "DELETE")
    ),
    *(
        (what, "POST", "/users", json.dumps({**body, "password": PASSWORD}).encode())
        for what, body in [
            ("name with a final newline", {"email": "nl@example.com", "name": "Nl\n"}),
            ("email with a BOM", {"email": "bom\ufeff@example.com", "name": "Bom"}),
            ("email with NEL", {"email": "nel\x85@example.com", "name": "Nel"}),
        ]
    ),
    *(
        (f"query {query}", "GET", f"/users?{query}", b"")
        for query in [
            "limit=0",
            "limit=101",
            "limit=abc",
            "limit=1e3",
            "limit=%ff",
            "limit=%zz",
            "limit=%00",
            f"limit={LONG}",
            "after=-1",
            "after=9223372036854775808",
            "limit=2&limit=abc",
            "after=1%27%3B%20DROP%20TABLE%20users",
        ]
    ),
]


async def chunks(chunk: bytes, count: int):
    for _ in range(count):
        yield chunk


async def rows(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch("SELECT id, email, name, is_active, created_at FROM users ORDER BY id")
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_hostile_input_gets_4xx_json_and_leaves_the_table_intact(default_project, database, service, figures):
    svc = service(default_project, database, MAX_BODY_BYTES=str(MAX_BODY), **POOL)
    await asyncio.to_thread(seed, svc.url, 3)
    admin = await asyncio.to_thread(admin_headers, default_project, database, svc.url)  # every request an admin's
    before = await rows(database)
    victim = before[0]["id"]

    answers = {}
    for what, method, path, body in BAD_REQUESTS:
        connection = Connection(svc.url, admin)
        try:
            answers[what, method] = await connection.request(method, path.format(id=victim), body)
        finally:
            connection.close()
    async with httpx.AsyncClient(base_url=svc.url, timeout=10, headers={**admin, **JSON_BODY}) as http:
        padded = json.dumps({"email": "big@example.com", "name": "Big", "password": PASSWORD}).encode()
        at_the_limit = padded[:-1] + b" " * (MAX_BODY - len(padded)) + b"}"
        too_big = await http.post("/users", content=at_the_limit + b" ")
        streamed = await http.post("/users", content=chunks(b" " * 10_000, 100))
        assert (too_big.status_code, streamed.status_code) == (413, 413)
        assert (await http.post("/users", content=at_the_limit)).status_code == 201
        stored = []
        for i, (name, email) in enumerate(itertools.zip_longest(HOSTILE_NAMES, HOSTILE_EMAILS, fillvalue=None)):
            new = {"email": email or f"plain{i}@example.com", "name": name or "P", "password": PASSWORD + (name or "")}
            created = await http.post("/users", json=new)
            assert created.status_code == 201, created.text
            stored.append(created.json())
        patched = await http.patch(f"/users/{stored[0]['id']}", json={"email": "'--@example.com", "name": "' OR 1=1"})
        assert patched.status_code == 200, patched.text
        stored[0] = patched.json()
        for user in stored:
            assert (await http.get(f"/users/{user['id']}")).json() == user
        assert (await http.get("/health")).status_code == 200

    for (what, method), (status, body) in answers.items():
        assert 400 <= status < 500, f"{what}: {method} answered {status} {body[:200]!r}"
        error = json.loads(body)
        assert error["error"] and "traceback" not in error, (what, error)
    after = await rows(database)
    assert after[: len(before)] == before
    assert len(after) == len(before) + 1 + len(stored)
    statuses = Counter(status for status, _ in answers.values())
    figures(
        f"hostile input: {len(answers)} malformed, mistyped, incomplete, unknown-field, out-of-range and encoded "
        f"requests -> {dict(sorted(statuses.items()))}, each a JSON error, 0 5xx; bodies over MAX_BODY_BYTES="
        f"{MAX_BODY} (sized and streamed) -> 413, one at the limit -> 201, server up; {len(stored)} users with SQL "
        f"metacharacters and non-ASCII in every string field stored and read back as sent; "
        f"{len(before)} seeded rows intact"
    )


# --- generated input ----------------------------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=30)  # surrogates and NUL included
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)
user_bodies = st.fixed_dictionaries(
    {},
    optional={
        "email": st.emails() | any_text | json_values,
        "name": any_text | json_values,
        "is_active": st.booleans() | json_values,
        "password": any_text | json_values,
        "id": json_values,
    },
)


@st.composite
def encoded(draw, values) -> bytes:
    value = draw(values)
    if draw(st.booleans()):
        return json.dumps(value).encode()  # lone surrogates escaped as \udxxx
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")  # raw: not valid UTF-8


ids = (
    st.integers(-(2**70), 2**70).map(str) | st.sampled_from(["1", "2", "3"]) | any_text.map(lambda t: quote(t, safe=""))
)
# A seeded user's id written otherwise than in plain digits: signed, padded, spaced, with an underscore, or
# in other scripts' digits (Arabic-Indic, fullwidth, mathematical bold), which Python's int() reads.
twisted_ids = st.builds(
    "{}{}{}".format,
    st.sampled_from(["", "+", "0", "00", "-", "%20", "%2B", "%09"]),
    st.sampled_from(["1", "2", "3", "%D9%A1", "%EF%BC%92", "%F0%9D%9F%91"]),
    st.sampled_from(["", "%20", "%0A", ".0", "_0", "%00"]),
).filter(lambda raw: raw not in {"1", "2", "3"})
queries = st.lists(
    st.tuples(st.sampled_from(["limit", "after", "x"]) | any_text, st.integers().map(str) | any_text), max_size=3
).map(
    lambda pairs: urlencode(
        [(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass")) for k, v in pairs]
    )
)
JSON_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/merge-patch+json",
    "application/vnd.example+json",
]
OTHER_TYPES = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=b",
    "application/jsonp",
    "text/json",
]
# Besides those, any header value a client can send: visible ASCII and bytes over 0x7f, often not UTF-8.
content_types = (
    st.sampled_from(JSON_TYPES)
    | st.sampled_from(OTHER_TYPES)
    | st.none()
    | st.lists(st.integers(0x21, 0xFF).filter(lambda b: b != 0x7F), min_size=1, max_size=20).map(bytes)
)
json_types = st.sampled_from(JSON_TYPES)


def answer_to(content_type: str | bytes | None) -> int | None:
    """What any request with a body sent with this Content-Type gets, whatever the body; None: the body decides."""
    if isinstance(content_type, bytes):
        try:
            content_type.decode()
        except UnicodeDecodeError:
            return 400  # a header that is not UTF-8
    return None if content_type in JSON_TYPES else 415


# (method, path, body, Content-Type, the status it must get or None)
requests = st.one_of(
    st.builds(
        lambda body, kind: ("POST", "/users", body, kind, answer_to(kind)),
        encoded(user_bodies) | st.binary(max_size=200),
        content_types,
    ),
    st.builds(
        lambda path, body, kind: ("PATCH", path, body, kind, answer_to(kind)),
        st.sampled_from(["/users/1", "/users/2", "/users/3"]),
        encoded(user_bodies),
        content_types,
    ),
    st.tuples(st.just("PATCH"), ids.map("/users/{}".format), encoded(user_bodies), json_types, st.none()),
    st.tuples(st.sampled_from(["GET", "DELETE"]), ids.map("/users/{}".format), st.just(b""), st.none(), st.none()),
    st.tuples(st.just("GET"), queries.map("/users?{}".format), st.just(b""), st.none(), st.none()),
    st.tuples(
        st.sampled_from(["GET", "PATCH", "DELETE"]),
        twisted_ids.map("/users/{}".format),
        encoded(user_bodies),
        json_types,
        st.just(404),
    ),
)
# Spaces that may stand around an address, and ways to change its case: each spelling is the same account.
spaces = st.lists(st.sampled_from([" ", "\t", "\n", "\r\n", "\x0b", "\x85", "\xa0", "\u2028", "\u3000"]), max_size=3)
cases = st.sampled_from([str.upper, str.lower, str.swapcase, str.title])


def test_generated_requests_never_get_a_5xx(default_project, database, service, figures):
    svc = service(default_project, database, **POOL)
    seed(svc.url, 3)
    admin = admin_headers(default_project, database, svc.url)  # every generated request an admin's
    statuses: Counter = Counter()
    examples = settings(
        max_examples=400,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

    def request(method: str, path: str, **kwargs) -> httpx.Response:
        response = http.request(method, path, **kwargs)
        if response.status_code == 401:  # a generated DELETE or PATCH took the admin away: make them again
            http.headers.update(admin_headers(default_project, database, svc.url))
            response = http.request(method, path, **kwargs)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (method, path, kwargs, response.text)
        assert response.status_code == 204 or response.headers["content-type"] == "application/json"
        return response

    @examples
    @given(requests)
    def no_5xx(generated) -> None:
        method, path, body, content_type, expected = generated
        headers = {} if content_type is None else {"content-type": content_type}
        response = request(method, path, content=body, headers=headers)
        assert expected is None or response.status_code == expected, (generated, response.text)

    @settings(examples, max_examples=150)
    @given(st.emails().filter(lambda email: len(email) <= 240), spaces, spaces, cases)
    def one_account_per_address(email, before, after, case) -> None:
        first = request("POST", "/users", json={"email": email, "name": "First", "password": PASSWORD})
        assert first.status_code in (201, 409), (email, first.text)  # 409: made by an earlier example
        spelt = "".join(before) + case(email) + "".join(after)
        second = request("POST", "/users", json={"email": spelt, "name": "Second", "password": PASSWORD})
        assert second.status_code == 409, spelt

    with httpx.Client(base_url=svc.url, timeout=10, headers=admin) as http:
        no_5xx()
        one_account_per_address()
    assert "unhandled error" not in svc.output
    figures(
        f"generated input (Hypothesis): {sum(statuses.values())} requests -> {dict(sorted(statuses.items()))}, 0 5xx; "
        "every body not sent as JSON 415, every id not in plain digits 404, every spelling of a taken address 409"
    )


# --- secrets ------------------------------------------------------------------------------------------------------


def test_the_password_stays_out_of_the_image_and_debug_is_off(default_project):
    # The bake itself (a fresh password, not in the replay file, .env git-ignored) is tested in test_bake.py.
    path = default_project.path
    env = dict(line.split("=", 1) for line in (path / ".env").read_text().splitlines() if "=" in line)
    assert env["DEBUG"] == "false"
    assert ".env" in (path / ".dockerignore").read_text().splitlines()
    # What the image is built from: the sources of the Dockerfile's COPY lines (not those from another stage).
    copied = [
        path / source
        for line in (path / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for source in line.split()[1:-1]
    ]
    assert copied and not [p for p in copied if p.name in {".", ".env"}]
    files = [f for p in copied for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    assert not [f for f in files if env["POSTGRES_PASSWORD"] in f.read_text(errors="replace")]
