"""Sign-in over real HTTP: 401 and 403, tokens that expire and are revoked in every process, throttled guessing,
no password in sight, and generated requests that find no operation open without the right token."""

import asyncio
import json
import statistics
import time
import uuid
from datetime import datetime
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FAST_HASHING, PASSWORD, SECRET, eventually, make_admin, sign_in, sign_up
from heaven_plugins.signin import AUTH
from heaven_plugins.signin.passwords import Passwords
from heaven_plugins.signin.tokens import SELECT_CUTOFF, VOID_USER_TOKENS, Tokens

# The example's routes that need a token: an admin's first.
PROTECTED = [("GET", "/users"), ("GET", "/users/1"), ("GET", "/users/me"), ("DELETE", "/auth/token")]


def forged(user_id: int, is_admin: bool, issued_at: float) -> str:
    """A token signed with the app's secret, as if issued at `issued_at`."""
    return f"Bearer {Tokens([SECRET], 3600).issue(user_id, is_admin, issued_at)[0]}"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_without_a_token_every_route_but_the_public_ones_is_401(client, method, path):
    response = await client.request(method, path, json={})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "missing_token"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer not-a-token",
        "Basic YWRtaW46YWRtaW4=",
        "Token abc",
        "bearer x.y.z",
        "Bearer " + "A" * 5000,
    ],
)
async def test_a_bad_token_is_401_invalid_token(user, client, authorization):
    response = await client.get("/users/me", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["error"] == "invalid_token"


async def test_the_scheme_is_case_insensitive_and_a_tampered_or_expired_token_is_401(client, user):
    token = user.headers["Authorization"].removeprefix("Bearer ")
    assert (await client.get("/users/me", headers={"Authorization": f"bearer {token}"})).status_code == 200
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert (await client.get("/users/me", headers={"Authorization": f"Bearer {tampered}"})).status_code == 401
    me = (await user.get("/users/me")).json()
    expired = forged(me["id"], False, time.time() - 3601)  # TOKEN_TTL is 3600 s
    assert (await client.get("/users/me", headers={"Authorization": expired})).status_code == 401
    assert (
        await client.get("/users/me", headers={"Authorization": forged(me["id"], False, time.time())})
    ).status_code == 200


async def test_a_header_sent_twice_is_401_not_500(client, user):
    token = user.headers["Authorization"]
    response = await client.get("/users/me", headers=[("Authorization", token), ("Authorization", token)])
    assert response.status_code == 401


@pytest.mark.parametrize(("method", "path"), PROTECTED[:2])
async def test_a_user_who_is_not_an_admin_gets_403_on_the_admins_routes(user, method, path):
    response = await user.request(method, path, json={})
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


async def test_sign_in_answers_a_bearer_token_that_expires_after_token_ttl(client):
    await sign_up(client, "ttl@example.com")
    before = time.time()
    response = await client.post("/auth/token", json={"email": "TTL@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_at"} and body["token_type"] == "bearer"
    expires_at = datetime.fromisoformat(body["expires_at"]).timestamp()
    assert before + 3600 - 5 < expires_at < time.time() + 3600 + 5


async def test_an_unknown_email_and_a_wrong_password_get_the_same_401(client):
    await sign_up(client, "known@example.com")
    wrong = await client.post("/auth/token", json={"email": "known@example.com", "password": "not the password"})
    unknown = await client.post("/auth/token", json={"email": "nobody@example.com", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": "invalid_credentials", "detail": "wrong email or password"}
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"]


async def test_a_deactivated_user_cannot_sign_in(client, conn):
    user = await sign_up(client, "inactive@example.com")
    await conn.execute("UPDATE users SET is_active = false WHERE id = $1", user["id"])
    response = await client.post("/auth/token", json={"email": "inactive@example.com", "password": PASSWORD})
    assert response.status_code == 401 and response.json()["error"] == "invalid_credentials"


async def test_signing_out_is_204_and_the_token_stops_working_here_at_once(user):
    assert (await user.get("/users/me")).status_code == 200
    response = await user.delete("/auth/token")
    assert response.status_code == 204 and response.content == b""
    assert (await user.get("/users/me")).status_code == 401
    assert (await user.delete("/auth/token")).status_code == 401


async def until_refused(http: httpx.AsyncClient, since: float, limit: float = 5.0) -> float:
    """Seconds from `since` until GET /users/me answers 401, polled every 20 ms; fails past `limit`."""
    # 404 for a moment when the user was deleted: the token still works, the user is gone.
    while (response := await http.get("/users/me")).status_code in (200, 404):
        assert time.monotonic() - since < limit, "still accepted"
        await asyncio.sleep(0.02)
    assert response.status_code == 401, response.text
    return time.monotonic() - since


async def test_a_token_signed_out_stops_working_in_another_process_within_5_s(user, migrated, spawn):
    other = await asyncio.to_thread(spawn, migrated)
    async with httpx.AsyncClient(base_url=other.url, headers=user.headers) as elsewhere:
        assert (await elsewhere.get("/users/me")).status_code == 200
        assert (await user.delete("/auth/token")).status_code == 204
        seconds = await until_refused(elsewhere, time.monotonic())
    print(f"signed out: refused by another process after {seconds:.2f} s")


CHANGES = {
    "deactivated": "UPDATE users SET is_active = false WHERE id = $1",
    "deleted": "DELETE FROM users WHERE id = $1",
    # A role change: the token says "not an admin", so it goes too.
    "made an admin": "UPDATE users SET is_admin = true WHERE id = $1",
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_users_tokens_stop_working_in_every_process_within_5_s(user, conn, migrated, spawn, change):
    # Changed as psql would: the trigger of sign-in's migration voids the tokens; each process reads it.
    # (A project's handler that makes the change also refreshes its own process at once: the bake's test_users.py.)
    other = await asyncio.to_thread(spawn, migrated)
    me = (await user.get("/users/me")).json()
    async with httpx.AsyncClient(base_url=other.url, headers=user.headers) as elsewhere:
        assert (await elsewhere.get("/users/me")).status_code == 200
        changed = time.monotonic()
        await conn.execute(CHANGES[change], me["id"])
        seconds = await until_refused(elsewhere, changed)
        assert await until_refused(user, changed) < 5
    print(f"{change}: refused by another process after {seconds:.2f} s")


async def test_the_token_is_refused_with_503_while_revocations_cannot_be_read(user, migrated):
    # The revocations' tables locked: each read waits, then times out; after 5 s without a read the
    # app cannot know whether a token was revoked, and refuses them all until it can read again.
    locker = await asyncpg.connect(migrated)
    statuses = []
    try:
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE token_cutoffs IN ACCESS EXCLUSIVE MODE")
        locked = time.monotonic()
        while time.monotonic() - locked < 8:
            response = await user.get("/users/me")
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert response.json()["error"] == "database_unavailable"
                break
            await asyncio.sleep(0.1)
        waited = time.monotonic() - locked
        await lock.rollback()
    finally:
        await locker.close()
    assert statuses[-1] == 503 and set(statuses) == {200, 503}, statuses
    assert 4 < waited < 7.5, waited  # the last read was at most a second before the lock
    recovered = time.monotonic()
    while (await user.get("/users/me")).status_code != 200:
        assert time.monotonic() - recovered < 3, "not serving again 3 s after the lock was gone"
        await asyncio.sleep(0.05)


async def test_failed_sign_ins_for_one_email_are_429_with_retry_after_in_every_process(migrated, serve, conn):
    first, second = [await serve(migrated, sign_in_limit=3, sign_in_window=600) for _ in range(2)]
    async with httpx.AsyncClient(base_url=first) as one, httpx.AsyncClient(base_url=second) as two:
        await sign_up(one, "guessed@example.com")
        wrong = {"email": "guessed@example.com", "password": "a wrong guess"}
        statuses = [(await http.post("/auth/token", json=wrong)).status_code for http in (one, two, one)]
        assert statuses == [401, 401, 401]
        for http in (two, one):  # the count is in Postgres: both processes see it
            refused = await http.post("/auth/token", json={**wrong, "password": PASSWORD})  # even the right one
            assert refused.status_code == 429 and refused.json()["error"] == "too_many_attempts"
            assert 590 <= int(refused.headers["retry-after"]) <= 600
        other = await one.post("/auth/token", json={"email": "someone.else@example.com", "password": "guess"})
        assert other.status_code == 401  # another email is not throttled
        await conn.execute("UPDATE sign_in_counts SET window_start = now() - interval '601 seconds'")
        assert await sign_in(one, "guessed@example.com")  # the window has passed


async def test_failed_sign_ins_from_one_address_are_throttled_whatever_the_email(migrated, serve, conn):
    async with httpx.AsyncClient(base_url=await serve(migrated, sign_in_address_limit=4)) as http:
        await sign_up(http, "mine@example.com")
        statuses = [
            (await http.post("/auth/token", json={"email": f"guess{i}@example.com", "password": "x"})).status_code
            for i in range(4)
        ]
        assert statuses == [401] * 4
        refused = await http.post("/auth/token", json={"email": "mine@example.com", "password": PASSWORD})
        assert refused.status_code == 429 and "retry-after" in refused.headers


async def test_a_successful_sign_in_clears_the_emails_count(migrated, serve, conn):
    async with httpx.AsyncClient(base_url=await serve(migrated, sign_in_limit=2)) as http:
        await sign_up(http, "forgetful@example.com")
        for _ in range(3):
            assert (
                await http.post("/auth/token", json={"email": "forgetful@example.com", "password": "no"})
            ).status_code == 401
            assert await sign_in(http, "forgetful@example.com")


async def test_a_burst_of_guesses_gets_no_more_tries_than_the_limit(migrated, serve, conn):
    async with httpx.AsyncClient(base_url=await serve(migrated, sign_in_limit=3)) as http:
        await sign_up(http, "burst@example.com")
        guesses = [{"email": "burst@example.com", "password": f"guess {i}"} for i in range(12)]
        statuses = [r.status_code for r in await asyncio.gather(*(http.post("/auth/token", json=g) for g in guesses))]
    assert sorted(statuses) == [401] * 3 + [429] * 9


def from_address(base_url: str, address: str) -> httpx.AsyncClient:
    """A client whose requests come from `address` (any of 127.0.0.0/8 reaches the server on loopback)."""
    return httpx.AsyncClient(base_url=base_url, transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_concurrent_sign_ins_for_one_user_never_deadlock(migrated, serve, conn):
    limits = {"sign_in_limit": 10_000, "sign_in_address_limit": 10_000, "pool_max_size": 10}
    async with httpx.AsyncClient(base_url=await serve(migrated, **limits), timeout=30) as http:
        await sign_up(http, "busy@example.com")

        async def signing_in(password: str) -> list[int]:
            body = {"email": "busy@example.com", "password": password}
            return [(await http.post("/auth/token", json=body)).status_code for _ in range(10)]

        # Correct ones and wrong ones at once: the statements that forgive and those that count, interleaved.
        loops = await asyncio.gather(*(signing_in(password) for password in [PASSWORD] * 8 + ["not it"] * 2))
    failed = sum(status >= 500 for statuses in loops for status in statuses)
    print(f"{len(loops) * 10} concurrent sign-ins for one user: {failed} answered 5xx")
    assert loops == [[200] * 10] * 8 + [[401] * 10] * 2


async def test_every_spelling_that_reaches_an_account_shares_its_count(migrated, serve, conn):
    # Python lowers U+0130 (I with a dot above) to "i" and a combining dot, Postgres to "i": the count
    # must be the account's, as Postgres finds it, whatever the spelling.
    async with httpx.AsyncClient(base_url=await serve(migrated, sign_in_limit=3)) as http:
        kiki = await sign_up(http, "kiki@idiom.io")
        spelled = await http.post("/auth/token", json={"email": "k\u0130k\u0130@idiom.io", "password": PASSWORD})
        assert spelled.status_code == 200, spelled.text  # this spelling reaches the account
        me = await http.get("/users/me", headers={"Authorization": f"Bearer {spelled.json()['access_token']}"})
        assert me.json()["id"] == kiki["id"]
        for email in ("k\u0130ki@idiom.io", "kik\u0130@idiom.io", "K\u0130K\u0130@idiom.io"):
            response = await http.post("/auth/token", json={"email": email, "password": "a wrong guess"})
            assert response.status_code == 401, response.text
        refused = await http.post("/auth/token", json={"email": "kiki@idiom.io", "password": PASSWORD})
        assert refused.status_code == 429, refused.text


async def test_a_guesser_elsewhere_does_not_lock_out_the_owner_where_they_signed_in_before(migrated, serve, conn):
    url = await serve(migrated)  # 5 failures
    async with from_address(url, "127.0.0.2") as owner, from_address(url, "127.0.0.3") as guesser:
        await sign_up(owner, "owner@example.com")
        assert await sign_in(owner, "owner@example.com")  # the owner's address is known from now on
        for _ in range(6):
            await guesser.post("/auth/token", json={"email": "owner@example.com", "password": "a guess"})
        refused = await guesser.post("/auth/token", json={"email": "owner@example.com", "password": PASSWORD})
        assert refused.status_code == 429  # the guesser is stopped, even with the right password
        assert await sign_in(owner, "owner@example.com")  # the owner is not
        async with from_address(url, "127.0.0.4") as elsewhere:  # nor is any other address let in
            response = await elsewhere.post("/auth/token", json={"email": "owner@example.com", "password": PASSWORD})
            assert response.status_code == 429
        for _ in range(5):  # the owner's own failures count where they are
            await owner.post("/auth/token", json={"email": "owner@example.com", "password": "a typo"})
        right = await owner.post("/auth/token", json={"email": "owner@example.com", "password": PASSWORD})
        assert right.status_code == 429


async def test_parallel_correct_sign_ins_are_never_told_to_wait_long(migrated, serve, conn):
    async with httpx.AsyncClient(base_url=await serve(migrated)) as http:  # 5 failures
        await sign_up(http, "eager@example.com")
        body = {"email": "eager@example.com", "password": PASSWORD}
        responses = await asyncio.gather(*(http.post("/auth/token", json=body) for _ in range(10)))
        statuses = [response.status_code for response in responses]
        assert set(statuses) <= {200, 429} and 200 in statuses, statuses
        # Those beyond the limit were refused while the others were being checked: try again in a second.
        assert {response.headers["retry-after"] for response in responses if response.status_code == 429} <= {"1"}
        assert await sign_in(http, "eager@example.com")


async def sign_in_rows(conn: asyncpg.Connection) -> int:
    """Rows in every table of sign-in's throttle, whatever its name."""
    tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE 'sign\\_in\\_%'")
    return sum([await conn.fetchval(f'SELECT count(*) FROM "{table}"') for (table,) in tables])


async def test_a_refused_sign_in_writes_no_row(migrated, serve, conn):
    async with httpx.AsyncClient(base_url=await serve(migrated, sign_in_address_limit=3)) as http:
        for i in range(3):
            response = await http.post("/auth/token", json={"email": f"first{i}@example.com", "password": "guess"})
            assert response.status_code == 401
        before = await sign_in_rows(conn)
        for batch in range(10):  # 200 refused, each for an email never tried
            guesses = [{"email": f"guess{batch}-{i}@example.com", "password": "guess"} for i in range(20)]
            responses = await asyncio.gather(*(http.post("/auth/token", json=guess) for guess in guesses))
            assert {response.status_code for response in responses} == {429}
        after = await sign_in_rows(conn)
    print(f"sign-in throttle rows: {before} after 3 failures, {after} after 200 refused attempts more")
    assert after == before


async def test_no_token_issued_before_a_change_commits_outlives_it(migrated, serve, conn):
    """Sign-ins running while the user's password or role changes: a token read from the row as it was
    before the change committed must be void once it has, whenever the sign-in ran."""
    url = await serve(migrated, sign_in_limit=100_000, sign_in_address_limit=100_000)
    hashing = Passwords(int(FAST_HASHING["ARGON2_TIME_COST"]), int(FAST_HASHING["ARGON2_MEMORY_KIB"]))
    passwords = [f"password number {n}" for n in range(6)]
    tokens = Tokens([SECRET], 3600)
    state = {"password": 0, "is_admin": False, "answers": 0}
    issued: list[tuple[int, object, str]] = []  # (the password signed in with, the token's principal, the token)
    async with httpx.AsyncClient(base_url=url) as http:
        user_id = (await sign_up(http, "raced@example.com", password=passwords[0]))["id"]

        async def signing_in() -> None:
            while True:
                password = state["password"]
                body = {"email": "raced@example.com", "password": passwords[password]}
                response = await http.post("/auth/token", json=body)
                assert response.status_code in (200, 401), response.text
                state["answers"] += 1
                if response.status_code == 200:
                    token = response.json()["access_token"]
                    issued.append((password, tokens.read(token, time.time()), f"Bearer {token}"))

        changer = await asyncpg.connect(migrated)
        loops = [asyncio.create_task(signing_in()) for _ in range(3)]
        rounds = []  # (the cutoff, the state from then on)
        try:
            for n in range(10):  # a new password, then a new role, and so on
                hashed = hashing.hash_now(passwords[n // 2 + 1]) if n % 2 == 0 else None
                if n == 9:  # a token of the moment before the last change: refused once the app has read it
                    before_last = await sign_in(http, "raced@example.com", passwords[state["password"]])
                async with changer.transaction():
                    if hashed:
                        await changer.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, hashed)
                        await changer.execute(VOID_USER_TOKENS, user_id)
                    else:
                        await changer.execute("UPDATE users SET is_admin = NOT is_admin WHERE id = $1", user_id)
                    # Held open until sign-ins have been answered meanwhile, or wait for it to commit.
                    answers, pid = state["answers"], changer.get_server_pid()

                    async def raced(answers=answers, pid=pid) -> bool:
                        blocked = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
                        return state["answers"] >= answers + 3 or await conn.fetchval(blocked, pid) > 0

                    await eventually(raced)
                if hashed:
                    state["password"] += 1
                else:
                    state["is_admin"] = not state["is_admin"]
                rounds.append((await changer.fetchval(SELECT_CUTOFF, user_id), state["password"], state["is_admin"]))
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await changer.close()
        # A token survives its round's change if it was issued after the cutoff (so the cutoff leaves it
        # be) from the row as it was before (the old password, or the old role), until the next change.
        survivors = []
        for (cutoff, password, is_admin), following in zip(rounds, [*rounds[1:], (float("inf"),)], strict=True):
            survivors += [
                (password_used, principal)
                for password_used, principal, _ in issued
                if cutoff <= principal.issued_at < following[0]
                and (password_used != password or principal.is_admin != is_admin)
            ]
        print(f"{len(issued)} tokens issued in {len(rounds)} changes; {len(survivors)} outlived their change")
        assert survivors == []
        # The served app agrees: once it has read the last change, a token issued since works if and only if
        # it was read from the row as changed.
        await eventually(lambda: refused(http, before_last))
        cutoff, password, is_admin = rounds[-1]
        since = [(used == password and p.is_admin == is_admin, t) for used, p, t in issued if p.issued_at >= cutoff]
        for works, token in since:
            assert await refused(http, token) is not works


async def refused(http: httpx.AsyncClient, authorization: str) -> bool:
    return (await http.get("/users/me", headers={"Authorization": authorization})).status_code == 401


async def test_a_hash_made_with_old_parameters_is_remade_at_sign_in_and_tokens_live_on(user, conn, migrated, serve):
    me = (await user.get("/users/me")).json()
    old = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", me["id"])
    assert ",t=1," in old
    async with httpx.AsyncClient(base_url=await serve(migrated, argon2_time_cost=2)) as http:
        assert await sign_in(http, "user@example.com")
        new = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", me["id"])
        assert ",t=2," in new and new != old
        assert (await http.get("/users/me", headers=user.headers)).status_code == 200  # not a password change


async def test_a_rehash_that_finds_the_hash_lane_full_waits_for_a_later_sign_in(user, conn, serve, new_app):
    me = (await user.get("/users/me")).json()
    old = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", me["id"])
    # New parameters (a rehash is due) under which a hash takes about a second, one of two threads for
    # hashes, and no waiting for one: a hash under way fills the lane, and the rehash would be refused.
    app = new_app(argon2_time_cost=3, argon2_memory_kib=262_144, hash_threads=2, hash_wait=0.1)
    async with httpx.AsyncClient(base_url=await serve(app=app)) as http:
        under_way = asyncio.create_task(app.peek(AUTH.name).passwords.hash("a sign-up elsewhere"))
        await asyncio.sleep(0)  # it takes the lane's thread
        assert await sign_in(http, "user@example.com")
        assert not under_way.done()
        assert await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", me["id"]) == old
        await under_way


async def test_sign_ins_refused_as_busy_count_no_failure_and_lock_no_one_out(user, serve, new_app):
    # One thread, and no waiting for it: while a hash of about a second holds it, a sign-in is 503 busy.
    app = new_app(argon2_time_cost=3, argon2_memory_kib=262_144, hash_threads=1, hash_wait=0.1)
    async with httpx.AsyncClient(base_url=await serve(app=app)) as http:
        await sign_in(http, "user@example.com")  # this address is the account's own from now on
        busy = asyncio.create_task(app.peek(AUTH.name).passwords.hash("a sign-up elsewhere"))
        await asyncio.sleep(0)  # it takes the thread
        for _ in range(6):  # past SIGN_IN_LIMIT, had they counted
            response = await http.post("/auth/token", json={"email": "user@example.com", "password": PASSWORD})
            assert response.status_code == 503 and response.json()["error"] == "busy", response.text
        await busy
        assert await sign_in(http, "user@example.com")  # the password was never checked: no failure counted


def test_an_unknown_email_takes_as_long_to_refuse_as_a_wrong_password(migrated, spawn):
    # At argon2's real cost (the other tests hash cheaply): without the decoy hash, an unknown
    # email would be refused a hundred times faster, and an attacker could list the accounts.
    process = spawn(migrated, argon2_time_cost=3, argon2_memory_kib=65536, sign_in_limit=1000)
    email = f"timed-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=process.url, timeout=30) as http:
        assert http.post("/users", json={"email": email, "name": "T", "password": PASSWORD}).status_code == 201
        durations: dict[str, list[float]] = {"wrong password": [], "unknown email": []}
        for i in range(9):
            for kind, who in (("wrong password", email), ("unknown email", f"nobody-{i}-{email}")):
                started = time.perf_counter()
                response = http.post("/auth/token", json={"email": who, "password": "a wrong password"})
                durations[kind].append(time.perf_counter() - started)
                assert response.status_code == 401
    wrong, unknown = (statistics.median(durations[kind]) for kind in ("wrong password", "unknown email"))
    print(
        f"sign-in refused: wrong password {wrong * 1000:.0f} ms, unknown email {unknown * 1000:.0f} ms (medians of 9)"
    )
    assert 0.5 < unknown / wrong < 2, durations


async def set_password(database_url: str, email: str, password: str) -> None:
    """A new password for `email`, and every token of theirs void."""
    hashed = Passwords(int(FAST_HASHING["ARGON2_TIME_COST"]), int(FAST_HASHING["ARGON2_MEMORY_KIB"])).hash_now(password)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            user_id = await conn.fetchval(
                "UPDATE users SET password_hash = $2 WHERE lower(email) = $1 RETURNING id", email, hashed
            )
            await conn.execute(VOID_USER_TOKENS, user_id)
    finally:
        await conn.close()


def test_no_response_and_no_log_line_carries_a_password_or_its_hash(migrated, spawn):
    process = spawn(migrated, log_level="DEBUG")
    email = f"secret-{uuid.uuid4().hex[:8]}@example.com"
    first, second = f"first-{uuid.uuid4().hex}", f"second-{uuid.uuid4().hex}"
    bodies = []
    with httpx.Client(base_url=process.url, timeout=10) as http:

        def call(method: str, path: str, **kwargs) -> httpx.Response:
            response = http.request(method, path, **kwargs)
            bodies.append(response.text + str(response.headers))
            return response

        assert call("POST", "/users", json={"email": email, "name": "S", "password": first}).status_code == 201
        call("POST", "/users", json={"email": email, "name": "S", "password": first})  # 409
        call("POST", "/users", json={"email": "short@example.com", "name": "S", "password": first[:7]})  # 422
        call("POST", "/auth/token", json={"email": email, "password": second})  # 401
        call("POST", "/auth/token", content=json.dumps({"email": email, "password": first}).encode()[:-1])  # 400
        token = call("POST", "/auth/token", json={"email": email, "password": first}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        # A new password, as a project's account route sets it (the bake's test_users.py sends it over HTTP).
        asyncio.run(set_password(migrated, email, second))
        while call("GET", "/users/me", headers=headers).status_code != 401:  # every token signed out, once read
            time.sleep(0.05)
        # Each refused token says why in the log, under the request's id; the client sees one 401 for all.
        fresh = call("POST", "/auth/token", json={"email": email, "password": second}).json()["access_token"]
        user_id = int(fresh.split(".")[0])
        refusals = {
            "no Authorization header": None,
            "not a Bearer token": f"Basic {fresh}",
            "malformed": f"Bearer {fresh[:20]}",
            "bad signature": f"Bearer {fresh[:-1]}{'0' if fresh[-1] != '0' else '1'}",
            "expired": forged(user_id, False, time.time() - 4000),
            "revoked: user": f"Bearer {token}",
        }
        for n, authorization in enumerate(refusals.values()):
            headers = {"X-Request-ID": f"refusal-{n}", **({"Authorization": authorization} if authorization else {})}
            assert call("GET", "/users/me", headers=headers).status_code == 401
        call("DELETE", "/auth/token", headers={"Authorization": f"Bearer {fresh}"})
        signed_out = {"Authorization": f"Bearer {fresh}", "X-Request-ID": "out"}
        assert call("GET", "/users/me", headers=signed_out).status_code == 401
    output = process.stop()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    said = {line.get("request_id"): line["message"] for line in lines if line["message"].startswith("token refused")}
    for n, reason in enumerate(refusals):
        assert said[f"refusal-{n}"].startswith(f"token refused: {reason}"), (reason, said)
    assert said["out"].startswith("token refused: signed out")
    assert token not in output and fresh not in output and fresh[:20] not in output

    async def stored() -> str:
        conn = await asyncpg.connect(migrated)
        try:
            return await conn.fetchval("SELECT password_hash FROM users WHERE lower(email) = $1", email)
        finally:
            await conn.close()

    hashed = asyncio.run(stored())
    salt_and_hash = hashed.rsplit("$", 2)[1:]
    assert "request" in output and "POST" in output  # the log was captured
    for secret in (first, second, *salt_and_hash):
        assert secret not in output
        assert not [body for body in bodies if secret in body]


# --- generated requests ---------------------------------------------------------------------------------------------

# What an HTTP header may carry (the server itself answers 400 to the rest, before the app sees it).
header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
TOKEN_KINDS = ["none", "garbage", "tampered", "expired", "other secret", "signed out", "user", "admin"]
ids = st.integers(-3, 2**64).map(str) | st.sampled_from(["1", "2", "0", "01", "+1"]) | st.text(max_size=8)
bodies = st.none() | st.dictionaries(
    st.sampled_from(["email", "name", "password", "is_active", "x"]), st.text(max_size=12)
)


def test_no_operation_is_reachable_without_the_right_token(migrated, spawn):
    """Every operation of the OpenAPI document, with every kind of token, any id and any body: a
    route needing a token never answers one without a good token other than 401 (or 404 or 405 for
    a path that is no route), nor a non-admin other than 403 on an admin's route; never a 5xx."""
    process = spawn(migrated, sign_in_limit=100_000, sign_in_address_limit=100_000)  # random guesses galore
    run = uuid.uuid4().hex[:8]
    user_email, admin_email = f"gen-user-{run}@example.com", f"gen-admin-{run}@example.com"
    with httpx.Client(base_url=process.url, timeout=10) as http:
        document = http.get("/docs/openapi.json").json()
        operations = [
            (method.upper(), path, operation["security"])
            for path, methods in document["paths"].items()
            for method, operation in methods.items()
        ]

        def make(email: str) -> None:
            if email == user_email:
                http.post("/users", json={"email": email, "name": "U", "password": PASSWORD})
                return

            async def made() -> None:
                conn = await asyncpg.connect(migrated)
                try:
                    await make_admin(conn, email)
                finally:
                    await conn.close()

            asyncio.run(made())

        def token_for(email: str) -> str:
            """A fresh token; made again first if a generated DELETE removed them (a deactivated user gets none)."""
            response = http.post("/auth/token", json={"email": email, "password": PASSWORD})
            if response.status_code != 200:
                make(email)
                response = http.post("/auth/token", json={"email": email, "password": PASSWORD})
            return response.json().get("access_token", "")

        make(user_email)
        make(admin_email)
        user_token = token_for(user_email)
        signed_out = token_for(user_email)
        assert http.delete("/auth/token", headers={"Authorization": f"Bearer {signed_out}"}).status_code == 204
        user_id = http.get("/users/me", headers={"Authorization": f"Bearer {user_token}"}).json()["id"]
        tampered = user_token[:-3] + ("xyz" if not user_token.endswith("xyz") else "abc")
        statuses: dict[str, set] = {kind: set() for kind in TOKEN_KINDS}

        @settings(
            max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
        )
        @given(st.sampled_from(operations), st.sampled_from(TOKEN_KINDS), ids, bodies, header_text)
        def check(operation, kind, path_id, body, garbage):
            method, path, security = operation
            # Fresh each time: a DELETE may have signed out or removed the user or the admin.
            tokens = {
                "none": None,
                "garbage": f"Bearer {garbage}".strip(),
                "tampered": f"Bearer {tampered}",
                "expired": forged(user_id, True, time.time() - 4000),
                "other secret": f"Bearer {Tokens(['x' * 32], 3600).issue(user_id, True, time.time())[0]}",
                "signed out": f"Bearer {signed_out}",
            }
            if kind in ("user", "admin"):
                tokens[kind] = f"Bearer {token_for(user_email if kind == 'user' else admin_email)}"
            headers = {"Authorization": tokens[kind]} if tokens[kind] else {}
            response = http.request(method, path.replace("{id}", quote(path_id, safe="")), json=body, headers=headers)
            statuses[kind].add(response.status_code)
            assert response.status_code < 500, (method, path, kind, response.text)
            needs = security[0]["bearer"] if security else None
            if needs is not None and kind not in ("user", "admin"):
                # 404 and 405: a path that is no route, answered before any route's rules.
                assert response.status_code in (401, 404, 405), (method, path, kind, response.status_code)
                if response.status_code == 401:
                    assert response.headers["www-authenticate"].startswith("Bearer")
            if needs == ["admin"] and kind == "user":
                assert response.status_code in (401, 403, 404, 405), (method, path, response.status_code)

        check()
    print({kind: sorted(found) for kind, found in statuses.items()})
    assert statuses["none"] >= {401} and statuses["user"] >= {403}
