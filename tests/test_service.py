"""The baked service as a user runs it: migrate, uvicorn, real HTTP; and refusing to start without Postgres."""

import signal
import sys
import time

import httpx
import pytest
from conftest import admin_headers, sign_in


@pytest.fixture
def migrated_database(default_project, new_database):
    url = new_database()
    result = default_project.run(sys.executable, "-m", f"{default_project.package}.migrate", DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    applied = (
        "0001_users.sql, 0002_sign_in.sql, 0003_sign_in_counts.sql, 0004_jobs.sql, 0005_accounts.sql, "
        "0005_accounts_email_change.sql"
    )
    assert f"applied 6 migration(s) {applied}" in result.stdout
    again = default_project.run(sys.executable, "-m", f"{default_project.package}.migrate", DATABASE_URL=url)
    assert "applied 0 migration(s)" in again.stdout
    return url


def test_users_over_real_http(default_project, migrated_database, service):
    # As shipped: the token secret and argon2's cost from the project's own .env.
    svc = service(default_project, migrated_database)
    with httpx.Client(base_url=svc.url, timeout=30) as http:
        assert http.get("/health").json() == {"status": "ok", "database": "ok"}
        assert http.get("/users").status_code == 401  # no token
        http.headers.update(admin_headers(default_project, migrated_database, svc.url))  # the admin is user 1

        password = "a long enough password"
        created = [
            http.post("/users", json={"email": f"u{i}@example.com", "name": f"U{i}", "password": password})
            for i in range(3)
        ]
        assert [r.status_code for r in created] == [201, 201, 201]
        first, second, third = (r.json() for r in created)
        assert created[0].headers["content-type"] == "application/json"
        assert password not in "".join(r.text for r in created)
        mine = sign_in(svc.url, "u0@example.com", password)
        assert http.get("/users/me", headers=mine).json() == {**first, "is_verified": False}
        assert http.get("/users", headers=mine).status_code == 403  # not an admin

        page = http.get("/users", params={"limit": 2, "after": 1}).json()
        assert [u["id"] for u in page] == [first["id"], second["id"]]
        assert [u["id"] for u in http.get("/users", params={"after": second["id"]}).json()] == [third["id"]]

        assert http.get(f"/users/{first['id']}").json() == first
        updated = http.patch(f"/users/{first['id']}", json={"name": "Renamed", "is_active": False})
        assert updated.status_code == 200 and updated.json() == {**first, "name": "Renamed", "is_active": False}
        assert http.delete(f"/users/{third['id']}").status_code == 204

        errors = {
            "malformed": http.post("/users", content=b"{oops", headers={"content-type": "application/json"}),
            "invalid": http.post("/users", json={"email": "nope", "name": "X", "password": password}),
            "unknown": http.get("/users/999999"),
            "gone": http.get(f"/users/{third['id']}"),
            "duplicate": http.post("/users", json={"email": "U1@EXAMPLE.COM", "name": "Again", "password": password}),
            "bad limit": http.get("/users", params={"limit": 1000}),
            "no route": http.get("/nowhere"),
            "too big": http.post("/users", content=b"x" * 2_000_000),
        }
        statuses = {name: response.status_code for name, response in errors.items()}
        assert statuses == {
            "malformed": 400,
            "invalid": 422,
            "unknown": 404,
            "gone": 404,
            "duplicate": 409,
            "bad limit": 422,
            "no route": 404,
            "too big": 413,
        }
        for response in errors.values():
            assert response.headers["content-type"] == "application/json"
            assert "Traceback" not in response.text
        assert errors["invalid"].json()["field"] == "email"
        assert [u["id"] for u in http.get("/users", params={"after": 1}).json()] == [first["id"], second["id"]]

    output = svc.stop(signal.SIGTERM)
    assert svc.process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output


def test_uvicorn_refuses_to_start_without_postgres(default_project, service, closed_port):
    port = closed_port
    svc = service(
        default_project,
        f"postgresql://svc:s3cret-pa55word@127.0.0.1:{port}/svcdb",
        start=False,
        CONNECT_TIMEOUT="3",
    )
    started = time.monotonic()
    svc.start(wait=False)
    svc.process.wait(timeout=15)
    output = svc.stop()
    elapsed = time.monotonic() - started
    assert svc.process.returncode == 3, output
    assert elapsed < 3 + 5
    lines = [line for line in output.splitlines() if f"127.0.0.1:{port}/svcdb" in line]
    assert len(lines) == 1, output
    assert "cannot connect to Postgres" in lines[0]
    assert "s3cret-pa55word" not in output
