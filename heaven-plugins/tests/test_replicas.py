"""Read replicas: a real streaming standby made to lag (recovery_min_apply_delay), the reads a handler lets it
serve going to it, a client reading its own writes all the same, and the primary reading when it lags or is down."""

import asyncio
import re
import socket

import asyncpg
import httpx
import pytest

from conftest import ADMIN, PASSWORD, eventually, make_admin
from heaven_plugins.postgres import describe
from heaven_plugins.postgres.replicas import wal_position

# The standby replays each commit this long after the primary made it: a replica visibly behind, even to a
# client on a machine so busy that a write and the reads after it take a second or two.
DELAY = "recovery_min_apply_delay = '2s'\n"


@pytest.fixture
async def lagging(pair):
    """A primary with an admin, and a standby replaying DELAY late: (primary url, standby url, standby node)."""
    primary, standby = await pair(synchronous=False, standby=DELAY)
    conn = await asyncpg.connect(primary.url("app"))
    try:
        await make_admin(conn)
    finally:
        await conn.close()
    return primary.url("app"), standby.url("app"), standby


async def admin_client(url: str) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=url, timeout=10)
    response = await http.post("/auth/token", json={"email": ADMIN, "password": PASSWORD})
    http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
    return http


def metric(text: str, name: str) -> float:
    """The value of one series in /metrics' text, 0 when it is not there."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_reads_go_to_a_lagging_replica_and_each_client_reads_its_own_writes(lagging, serve, log_lines):
    primary, replica, _ = lagging
    url = await serve(primary, database_replica_urls=replica, max_replica_lag=30)
    writer, stranger = await admin_client(url), await admin_client(url)
    stranger.cookies.clear()  # signed in, but without the writer's cookie: it has written nothing
    try:

        async def replica_ok() -> bool:
            # Until the standby replays a first transaction its lag is unknown, and it takes no reads.
            return (await writer.get("/health")).json()["replicas"][0]["status"] == "ok"

        await eventually(replica_ok, within=8)
        unseen = 0
        for i in range(15):
            body = {"email": f"u{i}@example.com", "name": "U", "password": PASSWORD}
            response = await writer.post("/users", json=body)
            assert response.status_code == 201, response.text
            assert wal_position(writer.cookies["pg_lsn"]) > 0
            user = response.json()["id"]
            # At once, by the writer: its own write, whichever server answers.
            mine = await writer.get(f"/users/{user}")
            assert mine.status_code == 200, mine.text
            assert any(u["id"] == user for u in (await writer.get("/users?limit=100")).json())
            # At once, by another client: the replica, seconds behind, has not replayed it.
            theirs = await stranger.get(f"/users/{user}")
            assert theirs.status_code in (200, 404)
            unseen += theirs.status_code == 404
        # The other client's reads went to the replica and found it behind (else this test proves nothing).
        assert unseen >= 5, unseen
        health = (await writer.get("/health")).json()
        scraped = (await writer.get("/metrics")).text
    finally:
        await writer.aclose()
        await stranger.aclose()
    where = describe(replica)
    assert health["replicas"] == [{"replica": where, "status": "ok", "lag": health["replicas"][0]["lag"]}]
    assert health["primary"] == describe(primary).rpartition("/")[0]
    # The replica served at least the reads that missed a write; the primary, at least the writer's 30.
    assert metric(scraped, 'db_replica_reads_total{served_by="replica"}') >= unseen
    assert metric(scraped, 'db_replica_reads_total{served_by="primary"}') >= 30
    assert metric(scraped, f'db_replica_up{{replica="{where}"}}') == 1


async def test_reads_go_to_the_primary_while_the_replica_lags_beyond_the_bound_or_is_down(lagging, serve, log_lines):
    primary, replica, standby = lagging
    url = await serve(primary, database_replica_urls=replica, max_replica_lag=0.3)
    writer, stranger = await admin_client(url), await admin_client(url)
    stranger.cookies.clear()
    log_lines()
    try:
        # Each write leaves the replica DELAY behind: it lags past 0.3 s, and the primary answers everyone.
        for i in range(3):
            user = (
                await writer.post("/users", json={"email": f"l{i}@example.com", "name": "L", "password": PASSWORD})
            ).json()["id"]

            async def lagging_seen() -> bool:
                return (await writer.get("/health")).json()["replicas"][0]["status"] == "lagging"

            await eventually(lagging_seen, within=3)
            assert (await stranger.get(f"/users/{user}")).status_code == 200
        # The replica gone: its reads go to the primary, one WARNING says so.
        await asyncio.to_thread(standby.stop, "immediate")
        for _ in range(5):
            assert (await stranger.get("/users?limit=5")).status_code == 200

        async def down() -> bool:
            return (await writer.get("/health")).json()["replicas"][0]["status"] == "down"

        await eventually(down, within=5)
        health = await writer.get("/health")
    finally:
        await writer.aclose()
        await stranger.aclose()
    assert health.status_code == 200 and health.json()["status"] == "ok"
    warnings = [line["message"] for line in log_lines() if line["level"] == "WARNING"]
    assert warnings == [f"replica {describe(replica)} is down: " + warnings[0].split(": ", 1)[1]], warnings


async def test_a_replica_url_may_name_several_hosts_and_its_standby_takes_the_reads(pair, serve):
    # libpq's multi-host form: of a host gone silent (it takes connections and never answers), the primary and the
    # standby, the standby. Each host gets its share of the timeouts, as the primary's hosts do: asyncpg alone would
    # spend the look's whole 2 s on the silent host, every time. prefer-standby is taken as standby: asked of each
    # host alone, it would take the primary, second in the list.
    primary, standby = await pair(synchronous=False)
    conn = await asyncpg.connect(primary.url("app"))
    try:
        await make_admin(conn)
    finally:
        await conn.close()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        hosts = f"127.0.0.1:{silent.getsockname()[1]},127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
        replica = (
            standby.url("app").replace(f"127.0.0.1:{standby.port}", hosts) + "?target_session_attrs=prefer-standby"
        )
        url = await serve(primary.url("app"), database_replica_urls=replica, connect_timeout=3.0)
        http = await admin_client(url)
        http.cookies.clear()  # no write of its own to wait for
        try:

            async def replica_ok() -> bool:
                return (await http.get("/health")).json()["replicas"][0]["status"] == "ok"

            await eventually(replica_ok, within=8)
            for _ in range(20):
                assert (await http.get("/users?limit=5")).status_code == 200
            ran = {node: await _listed(node.url("app")) for node in (primary, standby)}
            health = (await http.get("/health")).json()
            scraped = (await http.get("/metrics")).text
        finally:
            await http.aclose()
    assert health["replicas"][0]["replica"] == describe(replica)
    # The reads ran on the standby's connections, none on the primary's.
    assert ran[standby] >= 1 and ran[primary] == 0, ran
    assert metric(scraped, 'db_replica_reads_total{served_by="replica"}') >= 20
    assert metric(scraped, 'db_replica_reads_total{served_by="primary"}') == 0


LISTED = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%ORDER BY id LIMIT%' AND pid <> pg_backend_pid()"


async def _listed(url: str) -> int:
    """The connections to that server whose last query was the list of /users."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(LISTED)
    finally:
        await conn.close()
