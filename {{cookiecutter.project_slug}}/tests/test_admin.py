"""The admin command, `python -m <package>.admin EMAIL`: the password from standard input, the first admin made."""

import httpx

from conftest import ADMIN, PASSWORD, admin_command, eventually, sign_in, sign_up


async def test_the_command_creates_an_admin_who_can_list_users(client, conn, migrated):
    done = admin_command(migrated, "first@example.com")
    assert done.returncode == 0, done.stderr
    assert "first@example.com is an admin (a new user)" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    row = await conn.fetchrow("SELECT name, is_admin, is_active FROM users WHERE email = 'first@example.com'")
    assert tuple(row) == ("first", True, True)
    token = await sign_in(client, "first@example.com")
    assert (await client.get("/users", headers={"Authorization": token})).status_code == 200


async def test_the_command_makes_an_existing_user_an_admin_and_voids_their_tokens(client, conn, migrated):
    await sign_up(client, "promoted@example.com")
    old = await sign_in(client, "promoted@example.com")
    assert (await client.get("/users", headers={"Authorization": old})).status_code == 403
    done = admin_command(migrated, "Promoted@example.com", password="a new admin password")
    assert done.returncode == 0, done.stderr

    async def refused(token: str) -> bool:  # by the running app, once it has read the change (within 5 s)
        return (await client.get("/users/me", headers={"Authorization": token})).status_code == 401

    await eventually(lambda: refused(old))
    new = await sign_in(client, "promoted@example.com", "a new admin password")
    assert (await client.get("/users", headers={"Authorization": new})).status_code == 200
    assert await conn.fetchval("SELECT count(*) FROM users") == 1

    revoked = admin_command(migrated, "promoted@example.com", "--revoke")
    assert revoked.returncode == 0, revoked.stderr
    await eventually(lambda: refused(new))  # its role changed
    again = await sign_in(client, "promoted@example.com", "a new admin password")
    assert (await client.get("/users", headers={"Authorization": again})).status_code == 403


async def test_a_password_too_short_or_a_bad_email_changes_nothing(conn, migrated):
    short = admin_command(migrated, "short@example.com", password="seven77")
    assert short.returncode != 0 and "password" in short.stderr
    bad = admin_command(migrated, "not-an-email")
    assert bad.returncode != 0 and "email" in bad.stderr
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


def test_without_a_database_it_says_where_it_tried(closed_port):
    done = admin_command(f"postgresql://app:pw-not-shown@127.0.0.1:{closed_port}/app", "x@example.com")
    assert done.returncode != 0
    assert f"cannot connect to Postgres at 127.0.0.1:{closed_port}/app" in done.stderr
    assert "pw-not-shown" not in done.stderr


async def test_sign_up_cannot_make_an_admin(client):
    response = await client.post(
        "/users", json={"email": "sneaky@example.com", "name": "S", "password": PASSWORD, "is_admin": True}
    )
    assert response.status_code == 422 and response.json()["field"] == "is_admin"
    async with httpx.AsyncClient(base_url=str(client.base_url)) as http:
        await sign_up(http, "plain@example.com")
        token = await sign_in(http, "plain@example.com")
        assert (
            await http.patch("/users/me", json={"is_admin": True}, headers={"Authorization": token})
        ).status_code == 422


async def test_the_command_unlocks_a_user_locked_out_by_failed_sign_ins(client, conn, migrated):
    await sign_up(client, "locked@example.com")
    for _ in range(5):  # the served app's limit: 5 failures
        await client.post("/auth/token", json={"email": "locked@example.com", "password": "a wrong guess"})
    refused = await client.post("/auth/token", json={"email": "LOCKED@example.com", "password": PASSWORD})
    assert refused.status_code == 429
    done = admin_command(migrated, "Locked@example.com", "--unlock")
    assert done.returncode == 0, done.stderr
    assert "Locked@example.com may sign in again" in done.stdout
    assert await sign_in(client, "locked@example.com")
    again = admin_command(migrated, "locked@example.com", "--unlock")
    assert again.returncode == 1 and "No failed sign-ins counted for locked@example.com" in again.stderr


async def test_no_admin_exists_until_the_command_makes_one(client, conn):
    # The tables emptied, the migrations applied: they make no user at all, and no default credentials work.
    assert await conn.fetchval("SELECT count(*) FROM users WHERE is_admin") == 0
    for email, password in [(ADMIN, PASSWORD), ("admin", "admin"), ("admin@example.com", "admin")]:
        response = await client.post("/auth/token", json={"email": email, "password": password})
        # "admin" is no address, so no account's: 422 naming the email, as sign-up would answer it.
        assert response.status_code == (401 if "@" in email else 422), response.text
