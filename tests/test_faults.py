"""The baked service through the outages production has, injected for real against a Postgres on a loopback TCP
port: packets silently dropped (nftables), a failover onto a read-only server, a rotated password, a lock that
exhausts the pool, and SIGTERM during silent loss. Every request ends within the bound its settings promise, every
refusal is a JSON 503, the log stays a few lines, and the service serves again by itself. Each test prints what it
measured (see `figures` in conftest.py)."""

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from conftest import FAST_HASHING, admin_headers, needs
from test_reliability import PASSWORD, RestartablePostgres, drive, migrate, mixed, seed, tally, unavailable

NFT = shutil.which("nft")

# Small timeouts keep the file short; the bounds below are the README's formulas with these settings. The
# kernel's TCP_USER_TIMEOUT is kept out of the way (30 s), so that what ends each request is the service's own
# bounds; one test measures the kernel's part alone.
SETTINGS = {
    "POOL_MIN_SIZE": "2",
    "POOL_MAX_SIZE": "4",
    "ACQUIRE_TIMEOUT": "1",
    "CONNECT_TIMEOUT": "1",
    "QUERY_TIMEOUT": "2",
    "TCP_USER_TIMEOUT": "30",
    "UVICORN_ACCESS_LOG": "false",
    **FAST_HASHING,  # the admin signs in once; the tests load the pool, not the password threads
}
# max(ACQUIRE_TIMEOUT, CONNECT_TIMEOUT) + QUERY_TIMEOUT + 2 s, and 2 s more to close the pool at shutdown.
REQUEST_BOUND = 1 + 2 + 2
SHUTDOWN_BOUND = REQUEST_BOUND + 2
SLACK = 1.0  # for a loaded 2-core machine; the bounds themselves are the promise
HEALTH_WITHIN = 1.0


@pytest.fixture(scope="module")
def server() -> Iterator[RestartablePostgres]:
    """A Postgres of this module's own on a loopback TCP port: its packets can be dropped, its settings changed."""
    server = RestartablePostgres()
    yield server
    server.remove()


class AppDatabase:
    """A database owned by a role of its own, with the project's migrations applied: what the service connects as."""

    def __init__(self, server: RestartablePostgres, project) -> None:
        self.server = server
        self.role, self.password = f"app_{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        self.name = self.role
        asyncio.run(self.admin(f"CREATE ROLE {self.role} LOGIN PASSWORD '{self.password}'"))
        asyncio.run(self.admin(f'CREATE DATABASE "{self.name}" OWNER {self.role}'))
        migrate(project, self.url)

    @property
    def url(self) -> str:
        return f"postgresql://{self.role}:{quote(self.password)}@127.0.0.1:{self.server.port}/{self.name}"

    async def admin(self, *statements: str) -> None:
        """Run statements one by one as the superuser (ALTER SYSTEM refuses to share a statement)."""
        conn = await asyncpg.connect(self.server.url(self.name if statements[0].startswith("LOCK") else "postgres"))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()


@pytest.fixture
def app_database(server, default_project) -> AppDatabase:
    return AppDatabase(server, default_project)


class Silence:
    """Every packet to or from a loopback TCP port dropped without a word (no RST), by an nftables table of this
    process's own: established connections just wait, new ones get no answer to their SYN."""

    def __init__(self) -> None:
        self.table = f"heavenpg_faults_{os.getpid()}"

    def start(self, port: int, *only: str) -> None:
        """Drop every packet to and from `port`, or with `only`, an nft match, those to it that match."""
        self.nft("add", "table", "inet", self.table)
        self.nft("add", "chain", "inet", self.table, "in", "{ type filter hook input priority -10 ; }")
        for direction in ("dport",) if only else ("dport", "sport"):
            self.nft("add", "rule", "inet", self.table, "in", "tcp", direction, str(port), *only, "drop")

    def stop(self) -> None:
        if subprocess.run([NFT, "list", "table", "inet", self.table], capture_output=True, check=False).returncode == 0:
            self.nft("delete", "table", "inet", self.table)

    @contextlib.contextmanager
    def on(self, port: int, *only: str) -> Iterator[None]:
        self.start(port, *only)
        try:
            yield
        finally:
            self.stop()

    def nft(self, *args: str) -> None:
        subprocess.run([NFT, *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def silence() -> Iterator[Silence]:
    silence = Silence()
    yield silence
    silence.stop()  # even when the test failed between start() and stop()


def connections_to(pid: int, port: int) -> int:
    """TCP connections process `pid` holds open to `port`, as the kernel sees them (iproute2's ss)."""
    listing = subprocess.run(
        ["ss", "-tnpH", "state", "established", "dport", f"= :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return sum(f"pid={pid}," in line for line in listing.splitlines())


# A TCP payload that is a simple-protocol query ("Q", its length, its text) whose text begins "SELE": the pool's
# reset of a connection given back, when it gets one (asyncpg's "SELECT pg_advisory_unlock_all(); CLOSE ALL; ...").
# asyncpg's queries and the plugin's probes use the extended protocol; a transaction's BEGIN and COMMIT (a sign-up
# and the mail it queues) are simple queries too, and go on.
SIMPLE_QUERY = ("@ih,0,8", "0x51", "@ih,40,32", "0x53454c45")


def lines_of(svc, since: int, until: int | None = None) -> list[str]:
    """What the service logged between two points, without its access records (one per request, by design)."""
    return [line for line in svc.lines[since:until] if '.access"' not in line]


def health_of(outcome) -> dict:
    return json.loads(outcome.body)


async def poll_health(url: str, stop: asyncio.Event) -> list[tuple[float, int, dict]]:
    """/health every 100 ms until `stop`: (seconds it took, status, body) each time."""
    answers = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while not stop.is_set():
            started = time.monotonic()
            response = await http.get("/health")
            answers.append((time.monotonic() - started, response.status_code, response.json()))
            await asyncio.sleep(0.1)
    return answers


async def serving_again(url: str, since: float, headers: dict[str, str], timeout: float = 15) -> float:
    """Seconds from `since` until /health is 200 and a page of users is served to `headers` (an admin's)."""
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_BOUND + SLACK) as http:
        while (await http.get("/health")).status_code != 200 or (
            await http.get("/users", headers=headers)
        ).status_code != 200:
            assert time.monotonic() - since < timeout, f"not serving {timeout} s after the fault ended"
            await asyncio.sleep(0.05)
    return time.monotonic() - since


def honest(outcome) -> bool:
    """Served, or a JSON 503 saying the database is away; /health's answers are checked on their own."""
    if outcome.path == "/health":
        return outcome.status in (200, 503) and "database" in health_of(outcome)
    return outcome.status in (200, 201) or unavailable(outcome)


def with_health(traffic):
    return lambda n: ("GET", "/health", None) if n % 5 == 4 else traffic(n)


def quiet(svc, lines: list[str]) -> None:
    """No traceback at all, and of asyncpg's retries to reopen the pool's connections at most the first, in one
    line: the outage's own WARNING says the rest."""
    assert "Traceback" not in svc.output
    assert len([line for line in lines if "Failed to restore the pool connection floor" in line]) <= 1, lines


@needs(NFT, "nftables")
@pytest.mark.asyncio
async def test_silent_packet_loss_ends_every_request_in_its_bound_and_the_service_recovers_alone(
    default_project, server, app_database, silence, service, figures
):
    loss = 6.0
    svc = service(default_project, app_database.url, **SETTINGS)
    await asyncio.to_thread(seed, svc.url, 10)
    admin = await asyncio.to_thread(admin_headers, default_project, app_database.url, svc.url)
    stop = asyncio.Event()
    load = asyncio.create_task(
        drive(svc.url, with_health(mixed(10, "loss")), clients=12, seconds=60, limit=100_000, stop=stop, headers=admin)
    )
    await asyncio.sleep(1)
    mark, down = len(svc.lines), time.monotonic()
    with silence.on(server.port):
        await asyncio.sleep(loss)
    up, during = time.monotonic(), lines_of(svc, mark)
    recovery = await serving_again(svc.url, up, admin)
    await asyncio.sleep(1)
    stop.set()
    outcomes = await load

    odd = [o for o in outcomes if not honest(o)]
    assert not odd, (tally(outcomes), {(o.method, o.path, o.status, str(o.body)[:200]) for o in odd})
    slowest = max(o.seconds for o in outcomes)
    assert slowest < REQUEST_BOUND + SLACK, f"a request took {slowest:.2f} s"
    health = [o for o in outcomes if o.path == "/health"]
    assert max(o.seconds for o in health) < HEALTH_WITHIN
    silent = [o for o in health if down + 1 < o.started < up]
    assert silent and all(o.status == 503 and health_of(o)["database"] == "unreachable" for o in silent)
    refused = [o for o in outcomes if o.status == 503 and o.path != "/health"]
    after = [o for o in outcomes if o.started > up + recovery]
    late = sorted({(o.path, o.status, str(o.body)[:120], round(o.started - up, 2)) for o in after if o.status >= 300})
    assert after and not late, (tally(after), late[:5], lines_of(svc, mark)[-8:])
    quiet(svc, during)
    assert next(line for line in svc.lines if "is unreachable" in line) in during
    assert sum("is unreachable" in line for line in svc.lines) == 1
    assert sum("answers again" in line for line in svc.lines) == 1
    # Requests that waited for a connection through the loss are the outage's, not an exhausted pool's.
    assert not [line for line in svc.lines if "busy" in line], lines_of(svc, mark)
    figures(
        f"silent loss {loss:.0f} s (nftables DROP both ways) under 12 connections, {json.dumps(SETTINGS)}: "
        f"{len(outcomes)} requests ({tally(outcomes)}), {len(refused)} refused as JSON 503; slowest "
        f"{slowest:.2f} s (bound {REQUEST_BOUND} s); /health at most {max(o.seconds for o in health):.2f} s, "
        f"503 unreachable during the loss; serving again {recovery:.2f} s after the network returned, no restart; "
        f"{len(during)} log lines during the loss besides access records, 0 tracebacks"
    )


@needs(NFT, "nftables")
@pytest.mark.asyncio
async def test_sigterm_during_silent_loss_ends_the_process_within_its_bound(
    default_project, server, app_database, silence, service, figures
):
    svc = service(default_project, app_database.url, **SETTINGS)
    await asyncio.to_thread(seed, svc.url, 10)
    admin = await asyncio.to_thread(admin_headers, default_project, app_database.url, svc.url)
    stop = asyncio.Event()
    load = asyncio.create_task(
        drive(svc.url, mixed(10, "term"), clients=12, seconds=30, limit=100_000, stop=stop, headers=admin)
    )
    await asyncio.sleep(1)
    with silence.on(server.port):
        await asyncio.sleep(0.5)  # the pool's connections are now each stuck in a query, the other requests waiting
        signalled = time.monotonic()
        svc.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(svc.process.wait, SHUTDOWN_BOUND + 20)
        took = time.monotonic() - signalled
        stop.set()
    outcomes = await load
    output = svc.stop()

    assert took < SHUTDOWN_BOUND + SLACK, f"SIGTERM took {took:.2f} s"
    assert svc.process.returncode == -signal.SIGTERM, output
    assert "Application shutdown complete" in output and "Traceback" not in output
    assert "disconnected from Postgres" in output or "connections terminated" in output
    answered = [o for o in outcomes if o.status is not None]
    assert all(o.status in (200, 201) or unavailable(o) for o in answered), tally(answered)
    in_flight = [o for o in answered if o.started < signalled < o.started + o.seconds]
    figures(
        f"SIGTERM 0.5 s into silent loss under 12 connections: {len(in_flight)} requests in flight answered "
        f"({tally(in_flight)}); the process ended {took:.2f} s after the signal (bound {SHUTDOWN_BOUND} s), status "
        f"{svc.process.returncode}; the pool {'terminated' if 'connections terminated' in output else 'closed'}"
    )


@pytest.mark.asyncio
async def test_a_failover_onto_a_read_only_server_refuses_writes_with_503_while_reads_go_on(
    default_project, server, app_database, service, figures
):
    held = 3.0
    svc = service(default_project, app_database.url, **SETTINGS)
    await asyncio.to_thread(seed, svc.url, 10)
    admin = await asyncio.to_thread(admin_headers, default_project, app_database.url, svc.url)
    stop = asyncio.Event()
    load = asyncio.create_task(
        drive(svc.url, with_health(mixed(10, "ro")), clients=12, seconds=60, limit=100_000, stop=stop, headers=admin)
    )
    await asyncio.sleep(1)
    mark = len(svc.lines)
    try:
        await app_database.admin("ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()")
        read_only = time.monotonic()
        await asyncio.sleep(held)
    finally:
        restoring = time.monotonic()
        await app_database.admin(
            "SET default_transaction_read_only = off",
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
        )
    writable, during = time.monotonic(), lines_of(svc, mark)
    await serving_again(svc.url, writable, admin)
    async with httpx.AsyncClient(base_url=svc.url, timeout=5) as http:
        deadline = time.monotonic() + 10
        while (
            await http.post("/users", json={"email": "after@example.com", "name": "After", "password": PASSWORD})
        ).status_code != 201:
            assert time.monotonic() < deadline, "writes not accepted 10 s after the server became writable"
            await asyncio.sleep(0.05)
    writes_again = time.monotonic() - writable
    await asyncio.sleep(1)
    stop.set()
    outcomes = await load

    assert all(o.status in (200, 201, 503) for o in outcomes), tally(outcomes)
    spell = [o for o in outcomes if read_only + 0.5 < o.started and o.started + o.seconds < restoring]
    refused = [o for o in spell if o.status == 503]
    assert refused and all(json.loads(o.body)["error"] == "database_read_only" for o in refused if o.path != "/health")
    assert all(o.method in ("POST", "PATCH") for o in refused if o.path != "/health")
    reads = [o for o in spell if o.method == "GET" and o.path != "/health"]
    assert reads and all(o.status == 200 for o in reads), tally(reads)
    health = [health_of(o) for o in spell if o.path == "/health"]
    assert health and all(h == {"status": "degraded", "database": "read_only"} for h in health), health
    quiet(svc, during)
    assert sum("is read-only" in line for line in svc.lines) == 1
    assert sum("accepts writes again" in line for line in svc.lines) == 1
    figures(
        f"read-only failover (default_transaction_read_only, {held:.0f} s) under 12 connections: "
        f"{len([o for o in refused if o.path != '/health'])} writes refused as 503 database_read_only, "
        f"{len(reads)} reads served (all 200), slowest request {max(o.seconds for o in outcomes):.2f} s, /health 200 "
        f"degraded/read_only; writes accepted again "
        f"{writes_again:.2f} s after the server was writable; {len(during)} log lines besides access records, "
        "0 tracebacks"
    )


@pytest.mark.asyncio
async def test_a_rotated_password_is_503_and_one_warning_then_recovers_without_a_restart(
    default_project, server, app_database, service, figures
):
    svc = service(default_project, app_database.url, **SETTINGS)
    await asyncio.to_thread(seed, svc.url, 10)
    admin = await asyncio.to_thread(admin_headers, default_project, app_database.url, svc.url)
    stop = asyncio.Event()
    load = asyncio.create_task(
        drive(svc.url, with_health(mixed(10, "pw")), clients=12, seconds=60, limit=100_000, stop=stop, headers=admin)
    )
    await asyncio.sleep(1)
    mark, rotated = len(svc.lines), secrets.token_urlsafe(18)
    role = app_database.role
    terminate = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    try:
        await app_database.admin(f"ALTER ROLE {role} PASSWORD '{rotated}'", terminate)
        changed = time.monotonic()
        await asyncio.sleep(3)
    finally:
        await app_database.admin(f"ALTER ROLE {role} PASSWORD '{app_database.password}'")
    restored, during = time.monotonic(), lines_of(svc, mark)
    recovery = await serving_again(svc.url, restored, admin)
    await asyncio.sleep(1)
    stop.set()
    outcomes = await load

    odd = [o for o in outcomes if not honest(o)]
    assert not odd, (tally(outcomes), {(o.method, o.path, o.status, str(o.body)[:200]) for o in odd})
    refused = [o for o in outcomes if o.status == 503]
    assert [o for o in refused if o.path == "/health" and changed + 1 < o.started < restored]
    (warning,) = [line for line in svc.lines if "is unreachable" in line]
    assert "InvalidPasswordError" in warning and warning in during
    assert app_database.password not in svc.output and rotated not in svc.output
    quiet(svc, during)
    assert sum("answers again" in line for line in svc.lines) == 1
    figures(
        f"password rotated and the pool's connections terminated for 3 s under 12 connections: {len(outcomes)} "
        f"requests ({tally(outcomes)}), every failure a JSON 503, 0 500s, slowest "
        f"{max(o.seconds for o in outcomes):.2f} s; serving again {recovery:.2f} s after the "
        f"password was restored, no restart; {len(during)} log lines besides access records (one WARNING naming "
        f"InvalidPasswordError), 0 tracebacks, no password"
    )


@pytest.mark.asyncio
async def test_a_lock_exhausting_the_pool_ends_requests_by_their_timeouts_and_health_stays_quick(
    default_project, server, app_database, service, figures
):
    held = 3.0
    svc = service(default_project, app_database.url, **SETTINGS)
    await asyncio.to_thread(seed, svc.url, 10)
    admin = await asyncio.to_thread(admin_headers, default_project, app_database.url, svc.url)
    locker = await asyncpg.connect(server.url(app_database.name))
    stop = asyncio.Event()
    try:
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        mark = len(svc.lines)
        polling = asyncio.create_task(poll_health(svc.url, stop))
        outcomes = await drive(svc.url, mixed(10, "lock"), clients=20, seconds=held, limit=100_000, headers=admin)
        await lock.rollback()
        during = lines_of(svc, mark)
        recovery = await serving_again(svc.url, time.monotonic(), admin)
        stop.set()
        health = await polling
    finally:
        stop.set()
        await locker.close()

    odd = [o for o in outcomes if not honest(o)]
    assert not odd, (tally(outcomes), {(o.method, o.path, o.status, str(o.body)[:200]) for o in odd})
    slowest = max(o.seconds for o in outcomes)
    assert slowest < REQUEST_BOUND + SLACK
    assert max(seconds for seconds, _, _ in health) < HEALTH_WITHIN
    assert all(body["database"] == "ok" for _, _, body in health), health
    assert [body for _, status, body in health if status == 503 and body["status"] == "busy"], health
    quiet(svc, during)
    assert sum("busy for" in line for line in svc.lines) == 1

    async def ended() -> bool:
        return "free again" in svc.output

    deadline = time.monotonic() + 10
    while not await ended():
        assert time.monotonic() < deadline, "no line saying the pool is free again"
        await asyncio.sleep(0.1)
    figures(
        f"lock held {held:.0f} s on users, 20 connections on a pool of 4: {len(outcomes)} requests "
        f"({tally(outcomes)}), slowest {slowest:.2f} s (bound {REQUEST_BOUND} s); /health {len(health)} times, "
        f"at most {max(s for s, _, _ in health):.2f} s, database ok, 503 busy while requests were refused; serving "
        f"{recovery:.2f} s after the lock went; {len(during)} log lines besides access records, 0 tracebacks"
    )


@needs(NFT, "nftables")
@needs(shutil.which("ss"), "iproute2")
@pytest.mark.asyncio
async def test_idle_connections_to_a_silent_server_are_closed_by_the_kernel_and_replaced(
    default_project, server, app_database, silence, service, figures
):
    user_timeout = 2
    svc = service(default_project, app_database.url, **{**SETTINGS, "TCP_USER_TIMEOUT": str(user_timeout)})
    await asyncio.to_thread(seed, svc.url, 3)
    admin = await asyncio.to_thread(admin_headers, default_project, app_database.url, svc.url)
    pid = svc.process.pid
    before = connections_to(pid, server.port)
    assert before >= 2  # the pool's floor, and /health's own connection
    with silence.on(server.port):
        went = time.monotonic()
        # No request meanwhile: only keepalive probes, unanswered, and TCP_USER_TIMEOUT can notice the silence.
        while connections_to(pid, server.port):
            assert time.monotonic() - went < user_timeout + 3, "idle connections still open"
            await asyncio.sleep(0.1)
        noticed = time.monotonic() - went
    async with httpx.AsyncClient(base_url=svc.url, timeout=10) as http:
        started = time.monotonic()
        first = await http.get("/users", headers=admin)
        first_took = time.monotonic() - started
    assert first.status_code == 200 and first_took < 1
    figures(
        f"idle for {noticed:.1f} s of silent loss (TCP_USER_TIMEOUT={user_timeout}, keepalive probes every "
        f"{max(1, user_timeout // 2)} s): the kernel closed all {before} connections by itself; the first request "
        f"afterwards was served in {first_took * 1000:.0f} ms on a new connection"
    )


@needs(NFT, "nftables")
@pytest.mark.asyncio
async def test_a_reset_that_gets_no_answer_is_cut_off_and_its_request_keeps_its_answer(
    default_project, server, app_database, silence, service, figures
):
    svc = service(default_project, app_database.url, **SETTINGS)
    await asyncio.to_thread(seed, svc.url, 10)
    admin = await asyncio.to_thread(admin_headers, default_project, app_database.url, svc.url)
    # The connection answers queries, but each reset as a connection goes back to the pool vanishes: what a
    # network going silent between a query and its reset does, without a timer per request to notice it. Of
    # the mixed traffic, the renames are reset (their UPDATE ... SET may, by its words, change the session).
    with silence.on(server.port, *SIMPLE_QUERY):
        # Three clients on a pool of four: sign-in's once-a-second read of revocations takes the fourth, so no
        # request waits for a connection and what holds one up is its reset alone.
        outcomes = await drive(svc.url, mixed(10, "reset"), clients=3, seconds=4, limit=10_000, headers=admin)
    assert all(o.status in (200, 201) for o in outcomes), tally(outcomes)
    slowest = max(o.seconds for o in outcomes)
    assert slowest < 2 + SLACK, f"a request waited {slowest:.2f} s on its reset"
    stuck = [o for o in outcomes if o.seconds >= 1]
    assert stuck, "no reset was held up: the fault did not happen"
    figures(
        f"resets unanswered for 4 s (nftables drops the pool's reset queries) under 3 connections: {len(outcomes)} "
        f"requests, all answered ({tally(outcomes)}); {len(stuck)} waited on their reset until it was cut off "
        f"after {min(o.seconds for o in stuck):.2f}-{slowest:.2f} s (bound 2 s), their connections replaced"
    )
