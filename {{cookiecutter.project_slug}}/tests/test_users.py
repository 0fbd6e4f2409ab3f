"""/users over real HTTP: each route, each error status, JSON every time."""

import asyncio

import pytest

ALICE = {"email": "alice@example.com", "name": "Alice"}


async def create(client, email: str, name: str = "Someone") -> dict:
    response = await client.post("/users", json={"email": email, "name": name})
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_answers_201_with_the_user_and_its_location(client):
    response = await client.post("/users", json=ALICE)
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    user = response.json()
    assert user["email"] == ALICE["email"] and user["name"] == "Alice" and user["is_active"] is True
    assert isinstance(user["id"], int) and user["created_at"].endswith("Z")
    assert response.headers["location"] == f"/users/{user['id']}"
    assert (await client.get(response.headers["location"])).json() == user


async def test_list_pages_by_keyset(client):
    ids = [(await create(client, f"user{i}@example.com"))["id"] for i in range(5)]
    first = (await client.get("/users", params={"limit": 2})).json()
    assert [user["id"] for user in first] == ids[:2]
    second = (await client.get("/users", params={"limit": 2, "after": first[-1]["id"]})).json()
    assert [user["id"] for user in second] == ids[2:4]
    last = (await client.get("/users", params={"limit": 2, "after": second[-1]["id"]})).json()
    assert [user["id"] for user in last] == ids[4:]
    assert (await client.get("/users", params={"after": ids[-1]})).json() == []


async def test_list_defaults_to_20_and_caps_limit_at_100(client, conn):
    await conn.execute(
        "INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'U' FROM generate_series(1, 120) g"
    )
    assert len((await client.get("/users")).json()) == 20
    assert len((await client.get("/users?limit=100")).json()) == 100
    response = await client.get("/users?limit=101")
    assert response.status_code == 422
    assert response.json()["field"] == "limit"


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=abc", "limit=-5", "limit=5_0", "limit=%2B5", "after=-1", "after=x", "after=1.5"]
)
async def test_bad_query_values_are_422_naming_the_parameter(client, query):
    response = await client.get(f"/users?{query}")
    assert response.status_code == 422
    assert response.json()["field"] == query.split("=")[0]


async def test_get_unknown_or_malformed_id_is_404(client):
    for path in ["/users/999", "/users/0", "/users/-3", "/users/abc", f"/users/{2**70}"]:
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"


async def test_patch_changes_only_the_fields_given(client):
    user = await create(client, "bob@example.com", "Bob")
    response = await client.patch(f"/users/{user['id']}", json={"is_active": False})
    assert response.status_code == 200
    assert response.json() == {**user, "is_active": False}
    response = await client.patch(f"/users/{user['id']}", json={"name": "Robert", "email": "rob@example.com"})
    assert response.json() == {**user, "is_active": False, "name": "Robert", "email": "rob@example.com"}


async def test_patch_unknown_id_is_404(client):
    assert (await client.patch("/users/12345", json={"name": "X"})).status_code == 404


async def test_delete_answers_204_then_404(client):
    user = await create(client, "carol@example.com")
    response = await client.delete(f"/users/{user['id']}")
    assert response.status_code == 204 and response.content == b""
    assert (await client.get(f"/users/{user['id']}")).status_code == 404
    assert (await client.delete(f"/users/{user['id']}")).status_code == 404


async def test_duplicate_email_is_409_whatever_its_case(client):
    await create(client, "dave@example.com")
    response = await client.post("/users", json={"email": "DAVE@example.com", "name": "Other"})
    assert response.status_code == 409
    assert response.json()["field"] == "email"


async def test_patch_to_a_taken_email_is_409(client):
    await create(client, "erin@example.com")
    frank = await create(client, "frank@example.com")
    response = await client.patch(f"/users/{frank['id']}", json={"email": "erin@example.com"})
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "name": "X"}, "email"),
        ({"email": "a@b.co", "name": ""}, "name"),
        ({"email": "a@b.co", "name": "x" * 101}, "name"),
        ({"email": "a@b.co", "name": 5}, "name"),
        ({"email": "a@b.co"}, "name"),
        ({"email": "a@b.co", "name": "X", "role": "admin"}, "role"),
        ({"email": "a@b.co", "name": "nul\u0000"}, "name"),
        ({"email": "a@b.co", "name": "X", "is_active": "yes"}, "is_active"),
    ],
)
async def test_invalid_input_is_422_naming_the_field(client, conn, body, field):
    response = await client.post("/users", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


# The last is not UTF-8, which msgspec reports with UnicodeDecodeError rather than DecodeError.
@pytest.mark.parametrize("body", [b"", b"{", b"not json", b'{"email": "a@b.co",}', b'{"name": "\xff"}'])
async def test_malformed_body_is_400(client, body):
    response = await client.post("/users", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"


async def test_sql_metacharacters_and_non_ascii_are_stored_as_given(client):
    name = "Robert'); DROP TABLE users;-- Ünïcødé 名前 🚀"
    user = await create(client, "o'brien+tag@例え.jp", name)
    assert (await client.get(f"/users/{user['id']}")).json()["name"] == name


async def test_concurrent_duplicates_give_one_201_and_the_rest_409(client):
    responses = await asyncio.gather(
        *(client.post("/users", json={"email": "same@example.com", "name": "Twin"}) for _ in range(8))
    )
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
