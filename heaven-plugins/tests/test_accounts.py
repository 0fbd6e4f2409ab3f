"""Accounts that recover, end to end: real uvicorn, the real worker process and a real SMTP server. A sign-up's
link verifies the address once; a reset link sets a new password once, voids every token, and is void when it
has expired or the password changed; an unknown address gets the same 202 and no mail; a rolled-back sign-up
sends nothing; no token reaches a log line."""

import re
import statistics
import time

import httpx
import pytest

from conftest import PASSWORD, WorkerProcess, eventually, sign_in, sign_up
from test_signin import from_address

PUBLIC_URL = "http://127.0.0.1:8000"  # the example's default, which the session's app has


@pytest.fixture(scope="module")
def mail_worker(migrated, smtp, tmp_path_factory):
    """The test worker, sending the accounts' mail to the session's SMTP server, for this module."""
    _, port = smtp
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    process = WorkerProcess(migrated, log, smtp_port=port, public_url=PUBLIC_URL)
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture
def mailbox(smtp, mail_worker, conn):
    """The SMTP server's mailbox, emptied, with the worker running on empty tables."""
    box, _ = smtp
    box.messages.clear()
    return box


async def mail_to(mailbox, address: str, count: int = 1):
    """The `count`th message to `address`, once it arrived (bounded)."""

    async def arrived():
        return len(mailbox.to(address)) >= count

    await eventually(arrived, within=15)
    return mailbox.to(address)[count - 1]


def link_token(message, page: str) -> str:
    """The token of the link to `page` in both the text and the HTML body of a message."""
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    token = re.search(rf"{re.escape(PUBLIC_URL)}{page}\?token=([\w-]+)", text).group(1)
    assert f'href="{PUBLIC_URL}{page}?token={token}"' in html
    return token


async def queue_empty(conn) -> bool:
    return await conn.fetchval("SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')") == 0


async def test_the_sign_up_link_verifies_the_address_once(client, conn, mailbox):
    user = await sign_up(client, "new@example.com")
    message = await mail_to(mailbox, "new@example.com")
    assert message["Subject"] == "Verify your address"
    assert message["From"] == "Example <noreply@example.com>"
    token = link_token(message, "/verify")
    assert not await conn.fetchval("SELECT is_verified FROM users WHERE id = $1", user["id"])
    # Stored hashed: the token itself is nowhere in the table.
    assert await conn.fetchval("SELECT count(*) FROM account_tokens WHERE hash = convert_to($1, 'utf8')", token) == 0

    assert (await client.post("/auth/verify", json={"token": token})).status_code == 204
    assert await conn.fetchval("SELECT is_verified FROM users WHERE id = $1", user["id"])
    again = await client.post("/auth/verify", json={"token": token})
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_token"
    assert again.json()["field"] == "token"


async def test_unverified_users_sign_in_only_where_the_setting_allows(serve, migrated, conn, mailbox):
    url = await serve(migrated, unverified_may_sign_in=False)
    async with httpx.AsyncClient(base_url=url) as http:
        await sign_up(http, "strict@example.com")
        refused = await http.post("/auth/token", json={"email": "strict@example.com", "password": PASSWORD})
        assert refused.status_code == 403
        assert refused.json()["error"] == "unverified"
        token = link_token(await mail_to(mailbox, "strict@example.com"), "/verify")
        assert (await http.post("/auth/verify", json={"token": token})).status_code == 204
        await sign_in(http, "strict@example.com")


async def test_a_reset_sets_the_password_once_and_voids_every_token(client, conn, mailbox, mail_worker, log_lines):
    await sign_up(client, "forgot@example.com")
    old_token = await sign_in(client, "forgot@example.com")
    assert (await client.get("/users/me", headers={"Authorization": old_token})).status_code == 200

    asked = await client.post("/auth/password-reset", json={"email": "forgot@example.com"})
    assert asked.status_code == 202
    message = await mail_to(mailbox, "forgot@example.com", count=2)  # the verification link came first
    assert message["Subject"] == "Reset your password"
    token = link_token(message, "/reset-password")

    new = "a new and better password"
    done = await client.post("/auth/password-reset/complete", json={"token": token, "password": new})
    assert done.status_code == 204
    assert (await client.get("/users/me", headers={"Authorization": old_token})).status_code == 401
    old_password = await client.post("/auth/token", json={"email": "forgot@example.com", "password": PASSWORD})
    assert old_password.status_code == 401
    await sign_in(client, "forgot@example.com", new)
    # The link proved the address is theirs.
    assert await conn.fetchval("SELECT is_verified FROM users WHERE email = 'forgot@example.com'")

    twice = await client.post("/auth/password-reset/complete", json={"token": token, "password": "yet another one"})
    assert twice.status_code == 400
    assert twice.json()["error"] == "invalid_token"

    # Neither the token nor the link reached a log line, the app's or the worker's.
    await eventually(lambda: queue_empty(conn))
    logged = "\n".join(str(line) for line in log_lines()) + mail_worker.output()
    assert "mail sent to f***@example.com" in mail_worker.output()
    assert token not in logged
    assert "reset-password" not in logged


async def test_an_expired_reset_link_is_refused(client, conn, mailbox):
    await sign_up(client, "late@example.com")
    await client.post("/auth/password-reset", json={"email": "late@example.com"})
    token = link_token(await mail_to(mailbox, "late@example.com", count=2), "/reset-password")
    await conn.execute("UPDATE account_tokens SET expires_at = now() - interval '1 second' WHERE purpose = 'reset'")
    late = await client.post("/auth/password-reset/complete", json={"token": token, "password": "too late now"})
    assert late.status_code == 400
    await sign_in(client, "late@example.com")  # the password did not change


async def test_a_reset_link_from_before_a_password_change_is_void(client, conn, mailbox):
    await sign_up(client, "changed@example.com")
    await client.post("/auth/password-reset", json={"email": "changed@example.com"})
    token = link_token(await mail_to(mailbox, "changed@example.com", count=2), "/reset-password")
    # The password changes another way (PATCH /users/me, the admin command, psql): the link is void.
    await conn.execute("UPDATE users SET password_hash = 'changed' WHERE email = 'changed@example.com'")
    void = await client.post("/auth/password-reset/complete", json={"token": token, "password": "not this one"})
    assert void.status_code == 400


async def test_an_unknown_address_gets_the_same_answer_in_the_same_time_and_no_mail(
    serve, migrated, conn, mailbox, mail_worker
):
    url = await serve(migrated, reset_limit=100)
    async with httpx.AsyncClient(base_url=url) as http:
        await sign_up(http, "known@example.com")
        await mail_to(mailbox, "known@example.com")
        times: dict[str, list[float]] = {"known@example.com": [], "nobody@example.com": []}
        answers = set()
        for turn in range(12):
            for address in sorted(times, reverse=turn % 2 == 1):  # each first in turn
                # Each measured with the worker idle: the mail a user's address gets is sent after the answer,
                # and would otherwise slow whichever request it overlaps, which is not the request's own time.
                await eventually(lambda: queue_empty(conn), within=15)
                started = time.perf_counter()
                response = await http.post("/auth/password-reset", json={"email": address})
                times[address].append(time.perf_counter() - started)
                # Every header but those that differ for any two requests.
                headers = tuple((k, v) for k, v in response.headers.items() if k not in ("date", "x-request-id"))
                answers.add((response.status_code, response.content, headers))
        assert len(answers) == 1
        assert next(iter(answers))[:2] == (202, b"")
        # A loose bound, for a busy machine: what keeps the two alike is that they run the same statements.
        known, unknown = (statistics.median(seconds) for seconds in times.values())
        assert abs(known - unknown) < 0.02, (known, unknown)
        await eventually(lambda: queue_empty(conn), within=15)
    # The sign-up's link, then ten reset links: the worker mails no address more within the window, whoever asks.
    assert len(mailbox.to("known@example.com")) == 1 + 10
    assert mailbox.to("nobody@example.com") == []
    assert "reset link for k***@example.com: 10 mailed in the window already, no mail" in mail_worker.output()


async def test_reset_requests_are_throttled(client, mailbox):
    for _ in range(3):
        assert (await client.post("/auth/password-reset", json={"email": "x@example.com"})).status_code == 202
    refused = await client.post("/auth/password-reset", json={"email": "x@example.com"})
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    # Its own counts: signing in is not refused for it.
    assert (
        await client.post("/auth/token", json={"email": "x@example.com", "password": "wrong one"})
    ).status_code == 401


async def test_nobody_can_get_the_owner_s_link_requests_refused(base_url, client, conn, mailbox):
    await sign_up(client, "victim@example.com")
    await mail_to(mailbox, "victim@example.com")
    async with from_address(base_url, "127.0.0.2") as attacker, from_address(base_url, "127.0.0.3") as owner:
        for path in ("/auth/password-reset", "/auth/verify/resend"):
            for _ in range(3):
                assert (await attacker.post(path, json={"email": "victim@example.com"})).status_code == 202
            refused = await attacker.post(path, json={"email": "victim@example.com"})
            assert refused.status_code == 429  # per address and client
            # The owner, from a client of their own (never signed in from: the address is not known), is not.
            assert (await owner.post(path, json={"email": "victim@example.com"})).status_code == 202
    await eventually(lambda: queue_empty(conn), within=15)
    subjects = [message["Subject"] for message in mailbox.to("victim@example.com")]
    assert subjects.count("Reset your password") == 4 and subjects.count("Verify your address") == 1 + 4


ROLL_BACK_AT_COMMIT = """
CREATE FUNCTION refuse_rollback_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.email LIKE 'rollback%' THEN RAISE EXCEPTION 'refused at commit'; END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER refuse_rollback_users AFTER INSERT ON users DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION refuse_rollback_users();
"""


async def test_a_sign_up_that_rolls_back_sends_no_mail(client, conn, mailbox):
    # A real fault at the last moment: the sign-up's transaction fails at COMMIT, after its mail was queued.
    await conn.execute(ROLL_BACK_AT_COMMIT)
    try:
        failed = await client.post("/users", json={"email": "rollback@example.com", "name": "R", "password": PASSWORD})
        assert failed.status_code == 500
        await sign_up(client, "after@example.com")
        await mail_to(mailbox, "after@example.com")
    finally:
        await conn.execute("DROP TRIGGER refuse_rollback_users ON users; DROP FUNCTION refuse_rollback_users()")
    assert await conn.fetchval("SELECT count(*) FROM users WHERE email = 'rollback@example.com'") == 0
    assert mailbox.to("rollback@example.com") == []
    assert await conn.fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'queued'") == 1  # after@'s only
