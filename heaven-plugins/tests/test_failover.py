"""Failover without a redeploy: a real primary and streaming standby, the service given both hosts
(target_session_attrs=read-write), a signed-in load, the primary stopped or killed, the standby promoted."""

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest

from conftest import ADMIN, PASSWORD, make_admin
from heaven_plugins.postgres import describe
from replication import Node


async def eventually(condition: Callable, within: float = 10.0) -> None:
    """Until `condition()` (a value, or a coroutine's) is true, every 20 ms; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not await _value(condition()):
        assert time.monotonic() < deadline, f"not within {within} s"
        await asyncio.sleep(0.02)


async def admin_on(primary: Node) -> None:
    """The admin the load signs in as, made on the primary (the standby replays it)."""
    conn = await asyncpg.connect(primary.url("app"))
    try:
        await make_admin(conn)
    finally:
        await conn.close()


def both(primary: Node, standby: Node) -> str:
    """libpq's multi-host DSN of the pair: whichever accepts writes."""
    where = f"127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
    return primary.url("app").replace(f"127.0.0.1:{primary.port}", where) + "?target_session_attrs=read-write"


class Load:
    """Sign-ups (writes) and an admin's reads of /users, a few at a time, until stopped: every answer noted."""

    def __init__(self, http: httpx.AsyncClient, authorization: str) -> None:
        self.http, self.authorization = http, authorization
        self.answers: list[tuple[float, float, str, httpx.Response]] = []  # sent, answered, what, response
        self.acknowledged: list[str] = []
        self.running = True
        self._sent = 0

    async def writer(self) -> None:
        while self.running:
            self._sent += 1
            email = f"user{self._sent}@example.com"
            body = {"email": email, "name": "U", "password": PASSWORD}
            response = await self._note("write", self.http.post("/users", json=body))
            if response.status_code == 201:
                self.acknowledged.append(email)

    async def reader(self) -> None:
        while self.running:
            await self._note("read", self.http.get("/users?limit=5", headers={"Authorization": self.authorization}))

    async def _note(self, what: str, request) -> httpx.Response:
        sent = time.monotonic()
        response = await request
        self.answers.append((sent, time.monotonic(), what, response))
        if response.status_code == 503:
            await asyncio.sleep(0.02)  # as a client told Retry-After would, at least a little
        return response


def written_since(load: Load, since: float) -> list[float]:
    """When each write sent after `since` that succeeded was answered."""
    return [
        answered
        for sent, answered, what, response in load.answers
        if what == "write" and sent > since and response.status_code == 201
    ]


def postgres_warnings(lines: list[dict]) -> list[str]:
    return [
        line["message"]
        for line in lines
        if line["level"] == "WARNING" and line["logger"].startswith("heaven_plugins.postgres")
    ]


@pytest.mark.parametrize(
    ("stop", "synchronous"),
    [("fast", True), ("kill", True), ("kill", False)],
    ids=["fast-sync", "kill9-sync", "kill9-async"],
)
async def test_after_a_failover_writes_come_back_within_5_s_of_the_promotion(pair, serve, log_lines, stop, synchronous):
    t0 = time.monotonic()
    primary, standby = await pair(synchronous)
    say(f"pair {time.monotonic() - t0:.2f}")
    dsn = both(primary, standby)
    await admin_on(primary)
    url = await serve(dsn, pool_max_size=4, connect_timeout=2.0, query_timeout=3.0, acquire_timeout=2.0)
    log_lines()
    async with httpx.AsyncClient(base_url=url, timeout=15) as http:
        token = (await http.post("/auth/token", json={"email": ADMIN, "password": PASSWORD})).json()["access_token"]
        load = Load(http, f"Bearer {token}")
        workers = [asyncio.create_task(load.writer()) for _ in range(3)] + [asyncio.create_task(load.reader())]
        await eventually(lambda: len(load.acknowledged) >= 20)
        stopped = time.monotonic()
        say(f"load up {stopped - t0:.2f}")
        await asyncio.to_thread(
            primary.kill if stop == "kill" else primary.stop, *(() if stop == "kill" else ("fast",))
        )
        await eventually(lambda: any(a[3].status_code == 503 for a in load.answers if a[0] > stopped))
        await asyncio.sleep(0.5)  # an outage with no primary at all, as while a failover is decided
        await asyncio.to_thread(standby.promote)
        promoted = time.monotonic()
        say(f"promoted {promoted - t0:.2f}")
        await eventually(
            lambda: any(a[2] == "write" and a[3].status_code == 201 and a[0] > promoted for a in load.answers)
        )
        back = min(a[1] for a in load.answers if a[2] == "write" and a[3].status_code == 201 and a[0] > promoted)
        await asyncio.sleep(0.3)  # a little load on the new primary
        load.running = False
        await asyncio.gather(*workers)
        health = (await http.get("/health")).json()
    say(f"load done {time.monotonic() - t0:.2f}")
    assert back - promoted < 5.0, f"writes back {back - promoted:.1f} s after the promotion"
    statuses = {a[3].status_code for a in load.answers}
    assert statuses <= {200, 201, 503}, statuses
    for _, _, _, response in load.answers:
        if response.status_code == 503:
            assert response.json()["error"] == "database_unavailable", response.text
            assert response.headers["Retry-After"] == "2"
    conn = await asyncpg.connect(standby.url("app"))
    try:
        present = {row[0] for row in await conn.fetch("SELECT email FROM users")}
    finally:
        await conn.close()
    lost = [email for email in load.acknowledged if email not in present]
    refused = sum(1 for a in load.answers if a[3].status_code == 503)
    say(
        f"\n{stop} {'sync' if synchronous else 'async'}: writes back {back - promoted:.2f} s after the promotion, "
        f"{back - stopped:.2f} s after the stop; {len(load.acknowledged)} writes acknowledged, {len(lost)} lost; "
        f"{refused} answers 503"
    )
    if synchronous:
        assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    assert health["primary"] == f"127.0.0.1:{standby.port}"
    warnings = postgres_warnings(log_lines())
    assert len(warnings) == 2, warnings
    assert "is unreachable" in warnings[0]
    assert "answers again" in warnings[1] and f"the primary is now 127.0.0.1:{standby.port}" in warnings[1]
    assert describe(dsn) in warnings[0]


def say(*words) -> None:
    """A measurement, to the terminal past pytest's capture (which log_lines reads)."""
    print(*words, file=sys.__stderr__)


async def _value(value):
    return (await value) if asyncio.iscoroutine(value) else value


@pytest.fixture
async def primary(template) -> AsyncIterator[Node]:
    """A primary alone (no standby), stopped after the test."""
    node = await asyncio.to_thread(template.primary)
    yield node
    node.stop("immediate")


async def test_a_host_gone_silent_first_in_the_list_does_not_keep_the_service_from_the_primary(primary, serve):
    # A host that takes connections and never answers, as one switched off or behind a firewall that drops
    # packets: asyncpg alone spends its whole connect timeout on it and never tries the next host.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        hosts = f"127.0.0.1:{silent.getsockname()[1]},127.0.0.1:{primary.port}"
        dsn = primary.url("app").replace(f"127.0.0.1:{primary.port}", hosts) + "?target_session_attrs=read-write"
        started = time.monotonic()
        url = await serve(dsn, connect_timeout=2.0, pool_min_size=2)
        took = time.monotonic() - started
        async with httpx.AsyncClient(base_url=url) as http:
            health = await http.get("/health")
    assert health.status_code == 200 and health.json()["primary"] == f"127.0.0.1:{primary.port}", health.text
    # asyncpg alone spends the whole timeout (2 s) on the silent host, and the app does not start. Here one
    # share of it (1 s) is spent, once: the pool's next connection went to the primary first.
    assert took < 4.0, took


async def test_the_old_primary_back_as_a_standby_is_never_written_to(pair, serve, log_lines):
    # A switchover: the primary stopped cleanly, the standby promoted, the old primary started again as a standby
    # of the new one (read-only, and first in the DSN's list of hosts), while the service keeps writing.
    primary, standby = await pair(synchronous=True)
    dsn = both(primary, standby)
    await admin_on(primary)
    url = await serve(dsn, pool_max_size=4, connect_timeout=2.0, query_timeout=3.0, acquire_timeout=2.0)
    log_lines()
    acknowledged: list[str] = []

    async def sign_up(http: httpx.AsyncClient) -> httpx.Response:
        email = f"s{len(acknowledged)}-{time.monotonic_ns()}@example.com"
        response = await http.post("/users", json={"email": email, "name": "S", "password": PASSWORD})
        if response.status_code == 201:
            acknowledged.append(email)
        return response

    async with httpx.AsyncClient(base_url=url, timeout=15) as http:
        assert (await sign_up(http)).status_code == 201
        await asyncio.to_thread(primary.stop, "fast")
        await asyncio.to_thread(standby.promote)

        async def written() -> bool:
            return (await sign_up(http)).status_code == 201

        await eventually(written, within=10)
        await asyncio.to_thread(primary.follow, standby)
        followed = await asyncpg.connect(standby.url("app"))
        try:
            streaming = "SELECT count(*) > 0 FROM pg_stat_replication WHERE state = 'streaming'"
            await eventually(lambda: followed.fetchval(streaming), within=10)
        finally:
            await followed.close()
        # The old primary answers again, read-only: the running service's writes stay on the new primary...
        answers = [(await sign_up(http)).status_code for _ in range(20)]
        # ...and a service started now, the old primary first in its list, finds the new one.
        fresh = await serve(dsn, pool_max_size=4, pool_min_size=4, connect_timeout=2.0)
        async with httpx.AsyncClient(base_url=fresh, timeout=15) as other:
            answers += [(await sign_up(other)).status_code for _ in range(20)]
            health = (await other.get("/health")).json()
    assert answers == [201] * 40, answers
    assert health["primary"] == f"127.0.0.1:{standby.port}", health
    old = await asyncpg.connect(primary.url("app"))
    try:
        assert await old.fetchval("SELECT pg_is_in_recovery()")
    finally:
        await old.close()
    new = await asyncpg.connect(standby.url("app"))
    try:
        assert not await new.fetchval("SELECT pg_is_in_recovery()")
        present = {row[0] for row in await new.fetch("SELECT email FROM users")}
    finally:
        await new.close()
    assert set(acknowledged) <= present, set(acknowledged) - present
    assert not [w for w in postgres_warnings(log_lines()) if "read-only" in w]
