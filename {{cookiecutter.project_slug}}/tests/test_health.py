"""/health: 200 while Postgres answers, 503 (and the other routes 503 too) when it does not."""

import time

import httpx

from conftest import SECRET
from {{ cookiecutter.package_name }}.tokens import Tokens


async def test_health_is_200_with_the_database_up(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


async def test_database_away_is_503_not_500(serve, closed_port):
    # With no connections kept open, the app starts without Postgres and meets its absence per request.
    url = f"postgresql://app:secret-pw@127.0.0.1:{closed_port}/app"
    async with httpx.AsyncClient(base_url=await serve(url, pool_min_size=0, connect_timeout=1)) as client:
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        new_user = {"email": "a@b.co", "name": "A", "password": "a long enough password"}
        # A token the app would take, but it cannot read the revocations: 503 rather than trust it.
        token, _ = Tokens([SECRET], 3600).issue(1, True, time.time())
        listed = await client.get("/users", headers={"Authorization": f"Bearer {token}"})
        for response in [listed, await client.post("/users", json=new_user)]:
            assert response.status_code == 503
            assert response.json()["error"] == "database_unavailable"
            assert "secret-pw" not in response.text
