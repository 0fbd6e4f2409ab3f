"""/users over real HTTP: sign-up, your own account (/users/me), the admins' routes, each error status, all JSON."""

import asyncio
import json

import pytest

from conftest import PASSWORD, sign_in, sign_up

ALICE = {"email": "alice@example.com", "name": "Alice", "password": PASSWORD}
ADMINS = [("GET", "/users"), ("GET", "/users/1"), ("PATCH", "/users/1"), ("DELETE", "/users/1")]
SIGNED_IN = [("GET", "/users/me"), ("PATCH", "/users/me"), ("DELETE", "/users/me")]


async def test_sign_up_answers_201_with_the_user_and_its_location(client, admin):
    response = await client.post("/users", json=ALICE)
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    user = response.json()
    assert set(user) == {"id", "email", "name", "is_active", "created_at"}  # never the password, nor its hash
    assert user["email"] == ALICE["email"] and user["name"] == "Alice" and user["is_active"] is True
    assert isinstance(user["id"], int) and user["created_at"].endswith("Z")
    assert response.headers["location"] == f"/users/{user['id']}"
    assert (await admin.get(response.headers["location"])).json() == user


async def test_the_password_is_stored_as_an_argon2id_hash(client, conn):
    user = await sign_up(client, "hashed@example.com")
    stored = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", user["id"])
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


async def test_list_pages_by_keyset(client, admin):
    ids = [1] + [(await sign_up(client, f"user{i}@example.com"))["id"] for i in range(5)]  # the admin is 1
    first = (await admin.get("/users", params={"limit": 2})).json()
    assert [user["id"] for user in first] == ids[:2]
    second = (await admin.get("/users", params={"limit": 2, "after": first[-1]["id"]})).json()
    assert [user["id"] for user in second] == ids[2:4]
    last = (await admin.get("/users", params={"limit": 4, "after": second[-1]["id"]})).json()
    assert [user["id"] for user in last] == ids[4:]
    assert (await admin.get("/users", params={"after": ids[-1]})).json() == []


async def test_list_defaults_to_20_and_caps_limit_at_100(admin, conn):
    await conn.execute(
        "INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'U' FROM generate_series(1, 120) g"
    )
    assert len((await admin.get("/users")).json()) == 20
    assert len((await admin.get("/users?limit=100")).json()) == 100
    response = await admin.get("/users?limit=101")
    assert response.status_code == 422
    assert response.json()["field"] == "limit"


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=abc", "limit=-5", "limit=5_0", "limit=%2B5", "after=-1", "after=x", "after=1.5"]
)
async def test_bad_query_values_are_422_naming_the_parameter(admin, query):
    response = await admin.get(f"/users?{query}")
    assert response.status_code == 422
    assert response.json()["field"] == query.split("=")[0]


async def test_get_unknown_or_malformed_id_is_404(admin):
    for path in ["/users/999", "/users/0", "/users/-3", "/users/abc", f"/users/{2**70}"]:
        response = await admin.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"


async def test_patch_changes_only_the_fields_given(client, admin):
    user = await sign_up(client, "bob@example.com", "Bob")
    response = await admin.patch(f"/users/{user['id']}", json={"is_active": False})
    assert response.status_code == 200
    assert response.json() == {**user, "is_active": False}
    response = await admin.patch(f"/users/{user['id']}", json={"name": "Robert", "email": "rob@example.com"})
    assert response.json() == {**user, "is_active": False, "name": "Robert", "email": "rob@example.com"}


async def test_patch_unknown_id_is_404(admin):
    assert (await admin.patch("/users/12345", json={"name": "X"})).status_code == 404


async def test_delete_answers_204_then_404(client, admin):
    user = await sign_up(client, "carol@example.com")
    response = await admin.delete(f"/users/{user['id']}")
    assert response.status_code == 204 and response.content == b""
    assert (await admin.get(f"/users/{user['id']}")).status_code == 404
    assert (await admin.delete(f"/users/{user['id']}")).status_code == 404


async def test_duplicate_email_is_409_whatever_its_case(client):
    await sign_up(client, "dave@example.com")
    response = await client.post("/users", json={**ALICE, "email": "DAVE@example.com"})
    assert response.status_code == 409
    assert response.json() == {"error": "conflict", "detail": "this email is taken already", "field": "email"}


async def test_patch_to_a_taken_email_is_409(client, admin):
    await sign_up(client, "erin@example.com")
    frank = await sign_up(client, "frank@example.com")
    response = await admin.patch(f"/users/{frank['id']}", json={"email": "erin@example.com"})
    assert response.status_code == 409 and response.json()["field"] == "email"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "name": "X"}, "email"),
        ({"email": "a@b.co", "name": ""}, "name"),
        ({"email": "a@b.co", "name": "x" * 101}, "name"),
        ({"email": "a@b.co", "name": 5}, "name"),
        ({"email": "a@b.co", "password": PASSWORD}, "name"),
        ({"email": "a@b.co", "name": "X", "role": "admin"}, "role"),
        ({"email": "a@b.co", "name": "X", "is_admin": True}, "is_admin"),
        ({"email": "a@b.co", "name": "nul\u0000"}, "name"),
        ({"email": "a@b.co", "name": "X", "is_active": "yes"}, "is_active"),
        ({"email": "a@b.co", "name": "X", "password": None}, "password"),
        ({"email": "a@b.co", "name": "X", "password": "seven77"}, "password"),
        ({"email": "a@b.co", "name": "X", "password": "x" * 257}, "password"),
    ],
)
async def test_invalid_input_is_422_naming_the_field(client, conn, body, field):
    response = await client.post("/users", json={"password": PASSWORD, **body})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_a_password_of_8_or_256_characters_is_taken(client):
    for length in (8, 256):
        user = await sign_up(client, f"len{length}@example.com", password="p" * length)
        assert await sign_in(client, user["email"], "p" * length)


# The last is not UTF-8, which msgspec reports with UnicodeDecodeError rather than DecodeError.
@pytest.mark.parametrize("body", [b"", b"{", b"not json", b'{"email": "a@b.co",}', b'{"name": "\xff"}'])
async def test_malformed_body_is_400(client, body):
    response = await client.post("/users", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"


async def test_sql_metacharacters_and_non_ascii_are_stored_as_given(client, admin):
    name = "Robert'); DROP TABLE users;-- Ünïcødé 名前 🚀"
    user = await sign_up(client, "o'brien+tag@例え.jp", name)
    assert (await admin.get(f"/users/{user['id']}")).json()["name"] == name


async def test_concurrent_duplicates_give_one_201_and_the_rest_409(client):
    twins = {**ALICE, "email": "same@example.com"}
    responses = await asyncio.gather(*(client.post("/users", json=twins) for _ in range(8)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 7


async def test_unknown_route_and_method_answer_json(client):
    response = await client.get("/nothing/here")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    response = await client.put("/users")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


async def test_body_over_the_limit_is_413(client):
    response = await client.post("/users", content=b"x" * 2_000_000, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert (await client.get("/health")).status_code == 200


# --- /users/me: your own account -----------------------------------------------------------------------------------


async def test_me_is_the_signed_in_user(client, user, conn):
    me = await user.get("/users/me")
    assert me.status_code == 200
    assert me.json()["email"] == "user@example.com" and me.json()["is_verified"] is False
    await conn.execute("UPDATE users SET is_verified = true WHERE email = 'user@example.com'")
    assert (await user.get("/users/me")).json()["is_verified"] is True
    assert (await client.get("/users/me")).status_code == 401


async def test_me_changes_the_name_without_a_password(user):
    response = await user.patch("/users/me", json={"name": "Renamed"})
    assert response.status_code == 200 and response.json()["name"] == "Renamed"
    assert (await user.get("/users/me")).json()["name"] == "Renamed"


async def test_me_does_not_change_the_email_which_its_new_mailbox_confirms(user):
    # A stolen token must not move the account to its thief's address: POST /auth/email-change asks for the
    # password and mails the new address a link.
    response = await user.patch("/users/me", json={"name": "Renamed", "email": "thief@example.com"})
    assert response.status_code == 422 and response.json()["field"] == "email"
    assert "/auth/email-change" in response.json()["detail"]
    me = (await user.get("/users/me")).json()
    assert me["email"] == "user@example.com" and me["name"] != "Renamed"  # nothing changed


async def test_a_new_password_needs_the_current_one(user):
    missing = await user.patch("/users/me", json={"password": "a brand new password"})
    assert missing.status_code == 422 and missing.json()["field"] == "current_password"
    wrong = await user.patch("/users/me", json={"password": "a brand new password", "current_password": "not it!"})
    assert wrong.status_code == 403 and wrong.json()["field"] == "current_password"
    assert (await user.get("/users/me")).status_code == 200  # nothing changed


async def test_the_document_says_a_new_password_needs_the_current_one_and_may_be_refused_429(client, user):
    operation = (await client.get("/docs/openapi.json")).json()["paths"]["/users/me"]["patch"]
    assert "429" in operation["responses"]  # too many wrong current passwords, as for sign-in
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    # JSON Schema 2020-12: an object with "password" must have "current_password" as well, as the service says.
    assert schema["dependentRequired"] == {"password": ["current_password"]}
    missing = await user.patch("/users/me", json={"password": "a brand new password"})
    assert missing.status_code == 422 and missing.json()["field"] == "current_password"


async def test_a_new_password_signs_out_every_token_and_the_old_one_stops_working(client, user):
    other = await sign_in(client, "user@example.com")  # a second session
    response = await user.patch("/users/me", json={"password": "a brand new password", "current_password": PASSWORD})
    fields = {"id", "email", "name", "is_active", "created_at", "is_verified"}  # your own user: an Account
    assert response.status_code == 200 and set(response.json()) == fields
    for token in (user.headers["Authorization"], other):
        assert (await client.get("/users/me", headers={"Authorization": token})).status_code == 401
    old = await client.post("/auth/token", json={"email": "user@example.com", "password": PASSWORD})
    assert old.status_code == 401
    fresh = await sign_in(client, "user@example.com", "a brand new password")
    assert (await client.get("/users/me", headers={"Authorization": fresh})).status_code == 200


async def test_deleting_yourself_is_204_and_your_tokens_stop_working(client, user, admin):
    me = (await user.get("/users/me")).json()
    assert (await user.delete("/users/me")).status_code == 204
    assert (await admin.get(f"/users/{me['id']}")).status_code == 404
    assert (await user.get("/users/me")).status_code == 401


# --- who may: tokens and roles (sign-in itself is heaven-plugins' to test) ---------------------------------------


@pytest.mark.parametrize(("method", "path"), ADMINS + SIGNED_IN)
async def test_without_a_token_every_users_route_but_sign_up_is_401(client, method, path):
    response = await client.request(method, path, json={})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "missing_token"


@pytest.mark.parametrize(("method", "path"), ADMINS)
async def test_a_user_who_is_not_an_admin_gets_403_on_the_admins_routes(user, method, path):
    response = await user.request(method, path, json={})
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


@pytest.mark.parametrize("change", ["deactivated", "deleted"])
async def test_a_user_deactivated_or_deleted_by_an_admin_is_signed_out_here_at_once(user, admin, change):
    me = (await user.get("/users/me")).json()
    if change == "deactivated":
        assert (await admin.patch(f"/users/{me['id']}", json={"is_active": False})).status_code == 200
    else:
        assert (await admin.delete(f"/users/{me['id']}")).status_code == 204
    assert (await user.get("/users/me")).status_code == 401


async def test_a_password_change_shows_no_password_in_any_answer_or_log_line(user, conn, log_lines):
    new = "a brand new password"
    log_lines()
    answers = [
        await user.patch("/users/me", json={"password": new, "current_password": new}),  # 403
        await user.patch("/users/me", json={"password": new, "current_password": PASSWORD}),
    ]
    assert [answer.status_code for answer in answers] == [403, 200]
    logged = json.dumps(log_lines())
    assert "PATCH" in logged  # the log was captured
    hashed = await conn.fetchval("SELECT password_hash FROM users WHERE email = 'user@example.com'")
    for secret in (PASSWORD, new, *hashed.rsplit("$", 2)[1:]):
        assert secret not in logged
        assert not [answer for answer in answers if secret in answer.text + str(answer.headers)]
