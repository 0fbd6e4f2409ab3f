"""The worker, as `python -m {{ cookiecutter.package_name }}.worker` runs: a sign-up's link, a reset link, and an
address change's link and notice reach a real SMTP server from this project's templates, and SIGTERM stops it
cleanly. The machinery (retries, a killed worker, the flows' every refusal) is tested in heaven-plugins."""

import asyncio
import email
import email.policy
import re
import socket
import subprocess
import sys
import time

import pytest
from aiosmtpd.controller import Controller

from conftest import SOURCE, environment, sign_in, sign_up


class Mailbox:
    """What the SMTP server received, each message parsed."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp():
    """A real SMTP server on a free port of loopback: its mailbox and its port."""
    mailbox = Mailbox()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


async def next_mail(mailbox: Mailbox, count: int, within: float = 20.0) -> email.message.EmailMessage:
    deadline = time.monotonic() + within
    while len(mailbox.messages) < count:
        assert time.monotonic() < deadline, f"no mail number {count} within {within} s"
        await asyncio.sleep(0.05)
    return mailbox.messages[count - 1]


def link_token(message: email.message.EmailMessage, page: str) -> str:
    text = message.get_body(("plain",)).get_content()
    return re.search(rf"http://127\.0\.0\.1:8000{page}\?token=([\w-]+)", text).group(1)


@pytest.fixture
def worker(migrated, smtp, tmp_path):
    """The worker in a process of its own, sending to the test's SMTP server; killed after the test if still up."""
    _, port = smtp
    environ = {"PYTHONPATH": SOURCE, **environment(migrated, smtp_port=port, smtp_host="127.0.0.1", smtp_tls="none")}
    with (tmp_path / "worker.log").open("wb") as output:  # from a folder without a .env
        command = [sys.executable, "-m", "{{ cookiecutter.package_name }}.worker"]
        process = subprocess.Popen(command, env=environ, cwd=tmp_path, stdout=output, stderr=output)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


async def test_the_worker_mails_the_accounts_links_and_stops_on_sigterm(client, smtp, worker, tmp_path):
    mailbox, _ = smtp
    try:
        await sign_up(client, "new@example.com")
        verification = await next_mail(mailbox, 1)
        assert verification["To"] == "new@example.com"
        assert verification["Subject"] == "Verify your address"
        token = link_token(verification, "/verify")
        assert (await client.post("/auth/verify", json={"token": token})).status_code == 204

        assert (await client.post("/auth/password-reset", json={"email": "new@example.com"})).status_code == 202
        reset = await next_mail(mailbox, 2)
        assert reset["Subject"] == "Reset your password"
        token = link_token(reset, "/reset-password")
        body = {"token": token, "password": "a brand new password"}
        assert (await client.post("/auth/password-reset/complete", json=body)).status_code == 204

        headers = {"Authorization": await sign_in(client, "new@example.com", "a brand new password")}
        body = {"email": "newer@example.com", "current_password": "a brand new password"}
        assert (await client.post("/auth/email-change", json=body, headers=headers)).status_code == 202
        change = await next_mail(mailbox, 3)
        assert (change["To"], change["Subject"]) == ("newer@example.com", "Confirm your new address")
        token = link_token(change, "/change-email")
        assert (await client.post("/auth/email-change/complete", json={"token": token})).status_code == 204
        notice = await next_mail(mailbox, 4)
        assert (notice["To"], notice["Subject"]) == ("new@example.com", "Your address was changed")
        assert "newer@example.com" in notice.get_body(("plain",)).get_content()
    finally:
        worker.terminate()
    status = await asyncio.to_thread(worker.wait, 20)
    output = (tmp_path / "worker.log").read_text()
    assert status == 0, output
    assert token not in output


async def test_an_admin_s_change_of_address_voids_the_links_sent_to_the_old_one(admin, smtp, worker):
    mailbox, _ = smtp
    user = await sign_up(admin, "old@example.com")
    verification = link_token(await next_mail(mailbox, 1), "/verify")
    assert (await admin.post("/auth/password-reset", json={"email": "old@example.com"})).status_code == 202
    reset = link_token(await next_mail(mailbox, 2), "/reset-password")
    assert (await admin.patch(f"/users/{user['id']}", json={"email": "new@example.com"})).status_code == 200
    # Whoever reads the old mailbox sets no password with its link, nor verifies anything.
    body = {"token": reset, "password": "the old mailbox's reader"}
    assert (await admin.post("/auth/password-reset/complete", json=body)).status_code == 400
    assert (await admin.post("/auth/verify", json={"token": verification})).status_code == 400
    await sign_in(admin, "new@example.com")
