"""/health (readiness) tells an unreachable database from a read-only one and from an exhausted pool, within a
second; /health/live answers without the database."""

import asyncio
import signal
import time

import httpx

from conftest import PASSWORD, SECRET
from heaven_plugins.signin.tokens import Tokens


def admin_token() -> dict[str, str]:
    """The header of an admin's token (user 1), made with the service's secret: no sign-in needed."""
    token, _ = Tokens([SECRET], 3600).issue(1, True, time.time())
    return {"Authorization": f"Bearer {token}"}


async def test_health_is_200_with_the_database_up(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}
    live = await client.get("/health/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"}


async def test_database_away_is_503_not_500(serve, closed_port):
    # With no connections kept open, the app starts without Postgres and meets its absence per request.
    url = f"postgresql://app:secret-pw@127.0.0.1:{closed_port}/app"
    async with httpx.AsyncClient(base_url=await serve(url, pool_min_size=0, connect_timeout=1)) as client:
        health = await client.get("/health")
        assert health.status_code == 503 and health.json() == {"status": "unavailable", "database": "unreachable"}
        new_user = {"email": "a@b.co", "name": "A", "password": "a long enough password"}
        # A token the app would take, but it cannot read the revocations: 503 rather than trust it.
        token, _ = Tokens([SECRET], 3600).issue(1, True, time.time())
        listed = await client.get("/users", headers={"Authorization": f"Bearer {token}"})
        for response in [listed, await client.post("/users", json=new_user)]:
            assert response.status_code == 503
            assert response.json()["error"] == "database_unavailable"
            assert "secret-pw" not in response.text
        # Liveness never asks the database: restarting the service would not bring it back.
        live = await client.get("/health/live")
        assert live.status_code == 200 and live.json() == {"status": "ok"}


async def test_health_is_quick_and_says_busy_while_a_lock_holds_the_whole_pool(serve, migrated, conn):
    url = await serve(migrated, pool_min_size=1, pool_max_size=1, acquire_timeout=0.3, query_timeout=5)
    async with httpx.AsyncClient(base_url=url, timeout=10, headers=admin_token()) as http:
        lock = conn.transaction()
        await lock.start()
        await conn.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        try:
            holder = asyncio.create_task(http.get("/users"))  # the pool's one connection, waiting on the lock
            await asyncio.sleep(0.2)
            refused = await http.get("/users")
            started = time.monotonic()
            health = await http.get("/health")
            took = time.monotonic() - started
        finally:
            await lock.rollback()
        assert refused.status_code == 503 and refused.json() == {
            "error": "database_unavailable",
            "detail": "no connection to the database came free in time; try again in 2 s",
        }
        assert refused.headers["retry-after"] == health.headers["retry-after"] == "2"
        assert took < 1  # it asks over a connection of its own, not behind the requests
        assert health.status_code == 503 and health.json() == {"status": "busy", "database": "ok"}
        assert (await holder).status_code == 200


async def test_health_says_degraded_on_a_read_only_database_whose_writes_get_503(serve, role, conn):
    await conn.execute(f"ALTER ROLE {role.name} SET default_transaction_read_only = on")
    async with httpx.AsyncClient(base_url=await serve(role.url), headers=admin_token()) as http:
        write = await http.post("/users", json={"email": "w@example.com", "name": "W", "password": PASSWORD})
        assert write.status_code == 503 and write.json()["error"] == "database_read_only"
        assert (await http.get("/users")).status_code == 200
        health = await http.get("/health")
        assert health.status_code == 200 and health.json() == {"status": "degraded", "database": "read_only"}


def test_sigterm_drains_readiness_first_then_stops(migrated, spawn):
    # Served as the image serves it, in a process of its own: SIGTERM reaches the server as it would in a container.
    # A drain of 3 s: what the test asks within it takes well under 1.5 s, and a loaded machine has the rest.
    process = spawn(migrated, drain_seconds=3)
    with httpx.Client(base_url=process.url, timeout=5) as http:
        assert http.get("/health").json() == {"status": "ok", "database": "ok"}
        signalled = time.monotonic()
        process.process.terminate()
        # Readiness turns 503 at once (well within the drain, on a busy machine too), while the process goes on
        # serving every other route...
        deadline = signalled + 1.5
        while (health := http.get("/health")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert health.status_code == 503 and health.json()["status"] == "draining", health.text
        assert health.headers["retry-after"]
        assert http.get("/health/live").status_code == 200
        assert time.monotonic() - signalled < 3
        # ...until the drain is over: then the listener closes and the process ends.
        refused_at = None
        while refused_at is None and time.monotonic() - signalled < 10:
            try:
                httpx.get(f"{process.url}/health/live", timeout=1)
            except httpx.ConnectError:
                refused_at = time.monotonic() - signalled
            time.sleep(0.02)
    assert refused_at is not None and 3 <= refused_at < 6.5, refused_at
    assert process.process.wait(timeout=10) == -signal.SIGTERM  # uvicorn raises it again once stopped
    assert '"message": "draining"' in process.output() or '"message":"draining"' in process.output()


def test_without_a_drain_sigterm_closes_the_listener_at_once(migrated, spawn):
    process = spawn(migrated)
    signalled = time.monotonic()
    process.process.terminate()
    assert process.process.wait(timeout=10) == -signal.SIGTERM  # uvicorn raises it again once stopped
    assert time.monotonic() - signalled < 1.5
