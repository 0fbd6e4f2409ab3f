"""Changing an address, and asking for a new verification link, end to end: real uvicorn, the real worker process
and a real SMTP server. The new address gets a single-use link, the old one a notice; the link is void once used,
expired, or after a password or address change; a new verification link voids the one before; a request that
rolls back sends nothing; no token reaches a log line."""

import asyncio

import asyncpg
import httpx

import test_accounts
from conftest import PASSWORD, eventually, sign_in, sign_up
from heaven_plugins.signin.accounts import token_hash
from test_accounts import link_token, mail_to, queue_empty

# test_accounts.py's fixtures: the worker process, the SMTP server's mailbox.
mail_worker, mailbox = test_accounts.mail_worker, test_accounts.mailbox

NEW = "new@example.com"


async def signed_in(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    """Sign `email` up and in: the headers of its requests."""
    await sign_up(client, email)
    return {"Authorization": await sign_in(client, email)}


async def ask_change(client: httpx.AsyncClient, headers: dict, email: str = NEW, password: str = PASSWORD):
    return await client.post("/auth/email-change", json={"email": email, "current_password": password}, headers=headers)


async def test_an_address_changes_by_a_link_to_the_new_one_and_the_old_one_is_told(
    client, conn, mailbox, mail_worker, log_lines
):
    headers = await signed_in(client, "old@example.com")
    assert (await ask_change(client, headers)).status_code == 202
    message = await mail_to(mailbox, NEW)
    assert message["Subject"] == "Confirm your new address"
    assert "within 24 hours" in message.get_body(("plain",)).get_content()  # CHANGE_TTL's default, a day
    token = link_token(message, "/change-email")
    # Nothing changed yet: the old address still signs in, the new one does not.
    assert (await client.get("/users/me", headers=headers)).json()["email"] == "old@example.com"
    assert (await client.post("/auth/token", json={"email": NEW, "password": PASSWORD})).status_code == 401

    done = await client.post("/auth/email-change/complete", json={"token": token})
    assert done.status_code == 204, done.text
    me = await client.get("/users/me", headers=headers)  # the token signed in before still works
    assert me.json()["email"] == NEW
    assert await conn.fetchval("SELECT is_verified FROM users WHERE email = $1", NEW)  # the link proved it
    notice = await mail_to(mailbox, "old@example.com", count=2)  # after the sign-up's verification link
    assert notice["Subject"] == "Your address was changed"
    assert NEW in notice.get_body(("plain",)).get_content() and "token=" not in notice.as_string()
    await sign_in(client, NEW)
    assert (
        await client.post("/auth/token", json={"email": "old@example.com", "password": PASSWORD})
    ).status_code == 401

    twice = await client.post("/auth/email-change/complete", json={"token": token})
    assert twice.status_code == 400
    assert twice.json()["error"] == "invalid_token" and twice.json()["field"] == "token"
    # Neither the token nor the link reached a log line, the app's or the worker's.
    await eventually(lambda: queue_empty(conn))
    logged = "\n".join(str(line) for line in log_lines()) + mail_worker.output()
    assert "mail sent to n***@example.com" in mail_worker.output()
    assert token not in logged and "change-email" not in logged


async def test_a_change_needs_the_password_and_an_address_nobody_has(client, conn, mailbox):
    headers = await signed_in(client, "me@example.com")
    await sign_up(client, "taken@example.com")
    wrong = await ask_change(client, headers, password="not my password")
    assert (wrong.status_code, wrong.json()["field"]) == (403, "current_password")
    taken = await ask_change(client, headers, email=" TAKEN@example.com ")
    assert (taken.status_code, taken.json()["error"], taken.json()["field"]) == (409, "conflict", "email")
    same = await ask_change(client, headers, email="Me@Example.com")
    assert (same.status_code, same.json()["field"]) == (422, "email")
    assert (await ask_change(client, {})).status_code == 401
    assert await conn.fetchval("SELECT count(*) FROM account_tokens WHERE purpose = 'email'") == 0


async def test_a_change_link_expires_and_is_void_after_a_password_or_address_change(client, conn, mailbox):
    headers = await signed_in(client, "me@example.com")

    async def link(count: int) -> str:
        assert (await ask_change(client, headers)).status_code == 202
        return link_token(await mail_to(mailbox, NEW, count), "/change-email")

    async def refused(token: str) -> None:
        answer = await client.post("/auth/email-change/complete", json={"token": token})
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_token")

    first = await link(1)
    second = await link(2)  # a new request voids the link before it
    await refused(first)
    await conn.execute("UPDATE account_tokens SET expires_at = now() - interval '1 second' WHERE purpose = 'email'")
    await refused(second)
    # From before a password change (a reset, PATCH /users/me, psql): void.
    third = await link(3)
    await conn.execute("UPDATE users SET password_hash = 'changed' WHERE email = 'me@example.com'")
    await refused(third)
    assert await conn.fetchval("SELECT email FROM users") == "me@example.com"


async def test_a_change_link_is_void_once_the_address_changed_another_way(client, conn, mailbox):
    headers = await signed_in(client, "me@example.com")
    assert (await ask_change(client, headers)).status_code == 202
    token = link_token(await mail_to(mailbox, NEW), "/change-email")
    await conn.execute("UPDATE users SET email = 'elsewhere@example.com'")  # PATCH /users/me, an admin, psql
    answer = await client.post("/auth/email-change/complete", json={"token": token})
    assert answer.status_code == 400
    assert await conn.fetchval("SELECT email FROM users") == "elsewhere@example.com"


async def test_an_address_taken_meanwhile_is_a_conflict_and_the_link_stays_live(client, conn, mailbox):
    headers = await signed_in(client, "me@example.com")
    assert (await ask_change(client, headers)).status_code == 202
    token = link_token(await mail_to(mailbox, NEW), "/change-email")
    other = await sign_up(client, NEW.upper())  # someone signs up with it before the link is followed
    conflict = await client.post("/auth/email-change/complete", json={"token": token})
    assert (conflict.status_code, conflict.json()["error"], conflict.json()["field"]) == (409, "conflict", "email")
    await conn.execute("DELETE FROM users WHERE id = $1", other["id"])
    assert (await client.post("/auth/email-change/complete", json={"token": token})).status_code == 204


async def test_change_requests_are_throttled(client, mailbox):
    headers = await signed_in(client, "me@example.com")
    for turn in range(3):
        assert (await ask_change(client, headers, email=f"new{turn}@example.com")).status_code == 202
    refused = await ask_change(client, headers)
    assert (refused.status_code, refused.json()["error"]) == (429, "too_many_requests")
    assert int(refused.headers["Retry-After"]) > 0


async def test_an_address_gets_only_so_many_changes_whoever_asks(serve, migrated, conn, mailbox):
    async with httpx.AsyncClient(base_url=await serve(migrated, mail_limit=2)) as http:
        askers = [await signed_in(http, f"asker{n}@example.com") for n in range(3)]
        for headers in askers[:2]:
            assert (await ask_change(http, headers, "target@example.com")).status_code == 202
        refused = await ask_change(http, askers[2], "target@example.com")
        assert (refused.status_code, refused.json()["error"]) == (429, "too_many_requests")
        assert int(refused.headers["Retry-After"]) > 0
        assert (await ask_change(http, askers[2])).status_code == 202  # another address is not affected
    await eventually(lambda: queue_empty(conn), within=15)
    assert len(mailbox.to("target@example.com")) == 2


async def test_a_new_verification_link_voids_the_one_before(client, conn, mailbox):
    await sign_up(client, "me@example.com")
    first = link_token(await mail_to(mailbox, "me@example.com"), "/verify")
    answers = set()
    for address in ("me@example.com", "nobody@example.com"):
        response = await client.post("/auth/verify/resend", json={"email": address})
        answers.add((response.status_code, response.content))
    assert answers == {(202, b"")}  # the same for an address nobody has
    second = link_token(await mail_to(mailbox, "me@example.com", count=2), "/verify")
    assert (await client.post("/auth/verify", json={"token": first})).status_code == 400
    assert (await client.post("/auth/verify", json={"token": second})).status_code == 204
    # Verified now: asking again sends nothing, and answers the same.
    assert (await client.post("/auth/verify/resend", json={"email": "me@example.com"})).status_code == 202
    await eventually(lambda: queue_empty(conn), within=15)
    assert len(mailbox.to("me@example.com")) == 2 and mailbox.to("nobody@example.com") == []
    # Three requests for one address from one client in the window; the fourth waits.
    assert (await client.post("/auth/verify/resend", json={"email": "me@example.com"})).status_code == 202
    throttled = await client.post("/auth/verify/resend", json={"email": "me@example.com"})
    assert (throttled.status_code, throttled.json()["error"]) == (429, "too_many_requests")


ROLL_BACK_AT_COMMIT = """
CREATE FUNCTION refuse_rollback_links() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.email LIKE 'rollback%' THEN RAISE EXCEPTION 'refused at commit'; END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER refuse_rollback_links AFTER INSERT ON account_tokens DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION refuse_rollback_links();
"""


async def test_a_change_request_that_rolls_back_sends_nothing(client, conn, mailbox):
    headers = await signed_in(client, "me@example.com")
    await mail_to(mailbox, "me@example.com")
    # A real fault at the last moment: the request's transaction fails at COMMIT, after its mail was queued.
    await conn.execute(ROLL_BACK_AT_COMMIT)
    try:
        failed = await ask_change(client, headers, email="rollback@example.com")
        assert failed.status_code == 500
        assert (await ask_change(client, headers)).status_code == 202
        await mail_to(mailbox, NEW)
    finally:
        await conn.execute(
            "DROP TRIGGER refuse_rollback_links ON account_tokens; DROP FUNCTION refuse_rollback_links()"
        )
    await eventually(lambda: queue_empty(conn), within=15)
    assert mailbox.to("rollback@example.com") == []
    assert await conn.fetchval("SELECT count(*) FROM account_tokens WHERE email = 'rollback@example.com'") == 0


async def reset_link(client: httpx.AsyncClient, mailbox, email: str, count: int) -> str:
    assert (await client.post("/auth/password-reset", json={"email": email})).status_code == 202
    return link_token(await mail_to(mailbox, email, count), "/reset-password")


async def refused_reset(client: httpx.AsyncClient, token: str) -> None:
    answer = await client.post("/auth/password-reset/complete", json={"token": token, "password": "the attacker's"})
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_token")


async def test_a_reset_link_to_the_old_address_is_void_once_the_address_changed(client, conn, mailbox):
    headers = await signed_in(client, "carol@example.com")
    stale = await reset_link(client, mailbox, "carol@example.com", count=2)  # after the sign-up's link
    assert (await ask_change(client, headers)).status_code == 202
    done = await client.post(
        "/auth/email-change/complete", json={"token": link_token(await mail_to(mailbox, NEW), "/change-email")}
    )
    assert done.status_code == 204
    await refused_reset(client, stale)  # whoever reads the old mailbox
    await sign_in(client, NEW)  # the password did not change
    # An admin's change (PATCH /users/:id, psql) voids it too.
    stale = await reset_link(client, mailbox, NEW, count=2)
    await conn.execute("UPDATE users SET email = 'carol@example.org'")
    await refused_reset(client, stale)
    await sign_in(client, "carol@example.org")


async def test_a_reset_link_completes_only_for_the_address_it_went_to(client, conn, mailbox):
    user = await sign_up(client, "me@example.com")
    # The second guard, under the trigger: a live reset link whose address is not the user's any more.
    token = "a-link-to-an-address-the-user-had"
    await conn.execute(
        "INSERT INTO account_tokens (hash, purpose, user_id, email, expires_at)"
        " VALUES ($1, 'reset', $2, 'before@example.com', now() + interval '1 hour')",
        token_hash(token),
        user["id"],
    )
    await refused_reset(client, token)
    await sign_in(client, "me@example.com")


async def test_links_from_before_a_deactivation_stay_void_after_a_reactivation(client, conn, mailbox):
    await sign_up(client, "me@example.com")
    verify = link_token(await mail_to(mailbox, "me@example.com"), "/verify")
    reset = await reset_link(client, mailbox, "me@example.com", count=2)
    await conn.execute("UPDATE users SET is_active = false")
    assert await conn.fetchval("SELECT count(*) FROM account_tokens") == 0
    await conn.execute("UPDATE users SET is_active = true")
    await refused_reset(client, reset)
    answer = await client.post("/auth/verify", json={"token": verify})
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_token")
    assert not await conn.fetchval("SELECT is_verified FROM users")


async def waiting_for_a_lock(conn, count: int) -> bool:
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    return await conn.fetchval(waiting) >= count


async def test_a_change_and_a_reset_completed_at_once_wait_for_each_other(client, conn, mailbox, migrated):
    headers = await signed_in(client, "me@example.com")
    reset = await reset_link(client, mailbox, "me@example.com", count=2)
    assert (await ask_change(client, headers)).status_code == 202
    change = link_token(await mail_to(mailbox, NEW), "/change-email")
    # The user's row held elsewhere (an admin's PATCH) while both arrive, one after the other; then released.
    holder = await asyncpg.connect(migrated)
    try:
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT FROM users FOR UPDATE")
        new = "a new and better password"
        resetting = asyncio.create_task(
            client.post("/auth/password-reset/complete", json={"token": reset, "password": new})
        )
        await eventually(lambda: waiting_for_a_lock(conn, 1))
        changing = asyncio.create_task(client.post("/auth/email-change/complete", json={"token": change}))
        await eventually(lambda: waiting_for_a_lock(conn, 2))
        await held.rollback()
        reset_answer, change_answer = await resetting, await changing
    finally:
        await holder.close()
    # No deadlock: the reset went first, and its new password voided the change's link.
    assert reset_answer.status_code == 204, reset_answer.text
    assert (change_answer.status_code, change_answer.json()["error"]) == (400, "invalid_token")
    await sign_in(client, "me@example.com", new)
