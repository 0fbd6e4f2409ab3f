"""The fleet: three replicas of the baked service, served as the image serves them, behind the real HAProxy with the
shipped config and PgBouncer in transaction mode, under a steady signed-in load of reads and writes. A rolling deploy
(each replica replaced in turn) loses no request and no write; a replica killed with SIGKILL costs at most the writes
it had in flight."""

import asyncio
import itertools
import re
import signal
import time
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest
from conftest import FAST_HASHING, Baked, Service, make_admin, needs, sign_in
from test_edge import HAPROXY, Edge
from test_pgbouncer import PGBOUNCER, migrate, pgbouncer

pytestmark = [needs(HAPROXY, "haproxy"), needs(PGBOUNCER, "pgbouncer")]
# The image's command (Dockerfile): the HTTP edge's protocol and its shutdown bound; through PgBouncer (no prepared
# statements), believing the proxy's address, draining 3 s on SIGTERM as compose's edge profile does.
ARGS = ("--http", "heaven_plugins.server:HTTPProtocol", "--timeout-graceful-shutdown", "17")
SETTINGS = {
    "STATEMENT_CACHE_SIZE": "0",
    "POOL_MIN_SIZE": "1",
    "POOL_MAX_SIZE": "4",
    "FORWARDED_ALLOW_IPS": "127.0.0.1",
    "DRAIN_SECONDS": "3",
    **FAST_HASHING,
}
# What each client sends in turn: a sign-up, a read of that user, a rename of it, a page of users.
ROUND = [("POST", "/users"), ("GET", "/users/:id"), ("PATCH", "/users/:id"), ("GET", "/users")]
CLIENTS = 4  # requests under way at once, each client sending its next as soon as the last is answered
PAUSE = 0.005  # seconds between a client's requests: a steady load that leaves the two cores to the servers too


@dataclass
class Load:
    """What a steady load sent and got: (when, method, route, status or exception name) a request, and the writes."""

    answers: list[tuple[float, str, str, str]] = field(default_factory=list)
    created: dict[str, int] = field(default_factory=dict)  # email -> id, for each 201
    refused: list[str] = field(default_factory=list)  # emails whose sign-up got no 201
    renamed: dict[int, str] = field(default_factory=dict)  # id -> name, for each 200 to a PATCH
    unsure: dict[int, str] = field(default_factory=dict)  # id -> name, for each PATCH that got no 200

    def failed(self) -> list[tuple[float, str, str, str]]:
        expected = {"GET": "200", "POST": "201", "PATCH": "200"}
        return [answer for answer in self.answers if answer[3] != expected[answer[1]]]


async def steady_load(url: str, headers: dict[str, str], until: asyncio.Event, load: Load, limit: int) -> None:
    """CLIENTS clients, each in turn signing up a user, reading it, renaming it and listing users, until `until` is
    set or `limit` requests were sent."""
    counter = itertools.count()

    async def client(n: int, http: httpx.AsyncClient) -> None:
        while not until.is_set() and (i := next(counter)) < limit:
            email = f"load{n}-{i}@example.com"
            for method, route in [
                ("POST", "/users"),
                ("GET", "/users/:id"),
                ("PATCH", "/users/:id"),
                ("GET", "/users"),
            ]:
                user_id = load.created.get(email)
                if route == "/users/:id" and user_id is None:
                    continue
                path = route.replace(":id", str(user_id))
                name = f"Renamed {i}"
                try:
                    if method == "POST":
                        body = {"email": email, "name": f"Load {i}", "password": "a long enough password"}
                        response = await http.post(path, json=body)
                    elif method == "PATCH":
                        response = await http.patch(path, json={"name": name}, headers=headers)
                    else:
                        response = await http.get(
                            path, params={"limit": 5} if route == "/users" else None, headers=headers
                        )
                    outcome = str(response.status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                load.answers.append((time.monotonic(), method, route, outcome))
                if method == "POST":
                    if outcome == "201":
                        load.created[email] = response.json()["id"]
                    else:
                        load.refused.append(email)
                elif method == "PATCH":
                    (load.renamed if outcome == "200" else load.unsure)[user_id] = name
                await asyncio.sleep(PAUSE)

    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        await asyncio.gather(*(client(n, http) for n in range(CLIENTS)))


async def answered(load: Load, count: int, within: float) -> None:
    """Wait until the load has had `count` answers, however busy the machine, for `within` seconds at most."""
    deadline = time.monotonic() + within
    while len(load.answers) < count:
        assert time.monotonic() < deadline, f"{len(load.answers)} answers, not {count}, in {within} s"
        await asyncio.sleep(0.05)


async def lost_writes(database_url: str, load: Load) -> dict[str, list]:
    """Writes the client was told happened that did not, and those it was told failed that did."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = {row["email"]: (row["id"], row["name"]) for row in await conn.fetch("SELECT id, email, name FROM users")}
    finally:
        await conn.close()
    names = {user_id: name for user_id, name in rows.values()}
    return {
        "created but missing": [
            email for email, user_id in load.created.items() if rows.get(email, (None,))[0] != user_id
        ],
        "refused but there": [email for email in load.refused if email in rows],
        "renamed but not": [user_id for user_id, name in load.renamed.items() if names.get(user_id) != name],
    }


class Fleet:
    """Replicas of `project` on loopback, each in one of HAProxy's server slots."""

    def __init__(self, project: Baked, database_url: str) -> None:
        self.project, self.database_url = project, database_url

    def replica(self) -> Service:
        return Service(self.project, self.database_url, ARGS, **SETTINGS)


@pytest.fixture
def fleet(default_project, new_database, tmp_path):
    """A migrated database with an admin, PgBouncer in front of it, and a Fleet of replicas that go through it;
    every replica and proxy started is stopped after the test."""
    direct = new_database()
    migrate(default_project, direct)
    make_admin(default_project, direct)
    started: list = []
    with pgbouncer(direct, pool_size=6) as pooled:
        fleet = Fleet(default_project, pooled)
        fleet.direct, fleet.started, fleet.folder = direct, started, tmp_path
        yield fleet
        for process in reversed(started):
            if isinstance(process, Edge):
                process.stop()
            elif process.process is not None:
                process.stop(signal.SIGKILL)


def start_all(fleet: Fleet, replicas: list[Service]) -> None:
    for replica in replicas:
        fleet.started.append(replica)
        replica.start(wait=False)
    for replica in replicas:
        replica.wait_until_healthy()


def retried(proxy_log: str) -> int:
    """Requests HAProxy sent again (its log's retries field, "+1" when to another replica)."""
    # The fields after the termination state (4 characters): connections active/frontend/backend/server/retries.
    return sum(1 for line in proxy_log.splitlines() if re.search(r" [-\w]{4} \d+/\d+/\d+/\d+/\+?[1-9]\d* ", line))


def test_a_rolling_deploy_of_three_replicas_loses_no_request_and_no_write(fleet, figures):
    old = [fleet.replica() for _ in range(3)]
    new = [fleet.replica() for _ in range(3)]  # their ports known now, for the proxy's slots; started one by one
    start_all(fleet, old)
    slots = {f"old{n}": r.port for n, r in enumerate(old)} | {f"new{n}": r.port for n, r in enumerate(new)}
    proxy = Edge(fleet.project, slots, fleet.folder)
    fleet.started.append(proxy)
    # HAProxy starts a server as up: the empty slots are marked down by their failed checks before the load begins.
    proxy.wait_for({"old0": "UP", "old1": "UP", "old2": "UP", "new0": "DOWN", "new1": "DOWN", "new2": "DOWN"})
    headers = sign_in(proxy.url)
    load, stops = Load(), []

    async def rehearse() -> None:
        done = asyncio.Event()
        running = asyncio.create_task(steady_load(proxy.url, headers, done, load, limit=4000))
        await asyncio.sleep(1)
        for before, after in zip(old, new, strict=True):
            # As a rolling update does: the new replica first, ready, then SIGTERM to the old one, which drains.
            fleet.started.append(after)
            await asyncio.to_thread(after.start)
            signalled = time.monotonic()
            before.process.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(before.process.wait, 30)
            stops.append((signalled, time.monotonic(), status))
        await asyncio.sleep(1)
        done.set()
        await asyncio.wait_for(running, 30)

    started = time.monotonic()
    asyncio.run(asyncio.wait_for(rehearse(), 90))
    took = time.monotonic() - started
    lost = asyncio.run(lost_writes(fleet.direct, load))
    proxy_log = proxy.stop()
    writes = sum(1 for answer in load.answers if answer[1] != "GET")
    figures(
        f"rolling deploy of 3 replicas in {took:.1f} s: {len(load.answers)} requests ({writes} writes), "
        f"{len(load.failed())} failed, {sum(map(len, lost.values()))} writes lost, {retried(proxy_log)} retried by "
        f"the proxy; each old replica stopped {', '.join(f'{end - start:.1f}' for start, end, _ in stops)} s after "
        "SIGTERM"
    )
    # A load that really ran through the deploy: requests answered while each old replica drained and stopped.
    during = [sum(1 for when, *_ in load.answers if start < when < end) for start, end, _ in stops]
    assert min(during) >= 20, during
    assert load.failed() == [], load.failed()[:20]
    assert lost == {"created but missing": [], "refused but there": [], "renamed but not": []}, lost
    # Each old replica drained (3 s) before it closed its listener, then stopped as uvicorn does after SIGTERM.
    assert all(3 <= end - start < 20 and status == -signal.SIGTERM for start, end, status in stops), stops
    for replica in old:
        assert '"message": "draining"' in replica.output or '"message":"draining"' in replica.output


def test_a_replica_killed_under_load_costs_at_most_its_writes_in_flight(fleet, figures):
    replicas = [fleet.replica() for _ in range(3)]
    start_all(fleet, replicas)
    proxy = Edge(fleet.project, {f"app{n}": r.port for n, r in enumerate(replicas)}, fleet.folder)
    fleet.started.append(proxy)
    proxy.wait_for({"app0": "UP", "app1": "UP", "app2": "UP"})
    headers = sign_in(proxy.url)
    load, marks = Load(), {}

    async def crash() -> None:
        done = asyncio.Event()
        running = asyncio.create_task(steady_load(proxy.url, headers, done, load, limit=3000))
        await answered(load, 40, within=20)
        marks["killed"] = time.monotonic()
        replicas[1].process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proxy.wait_for, {"app1": "DOWN"})
        marks["down"] = time.monotonic()
        await answered(load, len(load.answers) + 40, within=20)
        done.set()
        await asyncio.wait_for(running, 30)

    asyncio.run(asyncio.wait_for(crash(), 60))
    lost = asyncio.run(lost_writes(fleet.direct, load))
    failed = load.failed()
    proxy_log = proxy.stop()
    figures(
        f"SIGKILL of 1 of 3 replicas: {len(load.answers)} requests, {len(failed)} failed ({failed}), marked down "
        f"{marks['down'] - marks['killed']:.2f} s after the kill, {retried(proxy_log)} retried by the proxy; "
        f"writes unsure: {lost}"
    )
    # A load that really ran on either side: before the kill, and once the proxy had the replica down.
    before = sum(1 for when, *_ in load.answers if when < marks["killed"])
    after = sum(1 for when, *_ in load.answers if when > marks["down"])
    assert before >= 20 and after >= 20, (before, after)
    # At most the requests in flight on it when it died, each client having one under way at most...
    assert len(failed) <= CLIENTS, failed
    # ...never a read (sent again to another replica), and none once the proxy has it down.
    assert all(method != "GET" for _, method, _, _ in failed), failed
    assert all(when <= marks["down"] for when, *_ in failed), (failed, marks)
    # A write the client was told happened did happen; one that failed in flight may or may not have.
    assert lost["created but missing"] == [] and lost["renamed but not"] == [], lost
