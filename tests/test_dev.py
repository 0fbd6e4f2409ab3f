"""The no-Docker loop: `python -m <package>.dev` starts its own Postgres quietly, says once where everything is
(mail too), shares its database with `migrate`, runs the worker that mails a sign-up its link, applies a new
migration when it reloads, and logs a line a person reads."""

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import threading
import time

import asyncpg
import httpx
from aiosmtpd.controller import Controller
from conftest import free_port

NEW_TABLE = "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL);\n"


def wait_for(condition, timeout: float, what: str, output) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s:\n{''.join(output)}"
        time.sleep(0.1)


def has_table(url: str, name: str) -> bool:
    async def check() -> bool:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
        finally:
            await conn.close()

    return asyncio.run(check())


class Mailbox:
    """The recipients of what a real SMTP server (aiosmtpd) received."""

    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


def test_dev_serves_migrates_and_shares_its_own_postgres(bake):
    project = bake(project_name="Dev Loop")  # its own bake: this test adds a migration to it
    port, smtp_port, mailbox = free_port(), free_port(), Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    process = subprocess.Popen(
        [sys.executable, "-m", f"{project.package}.dev", "--port", str(port)],  # with reload, as people run it
        cwd=project.path,
        # No DATABASE_URL, no TEST_DATABASE_URL; lines for a person, as a terminal would get without asking. Mail
        # to the test's SMTP server, as it would go to Mailpit's; no worker started but dev's own.
        env=project.env(LOG_FORMAT="console", SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()

    def healthy() -> bool:
        assert process.poll() is None, "".join(output)
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        return False

    try:
        wait_for(healthy, 60, "/health 200", output)
        base = f"http://127.0.0.1:{port}"
        users = httpx.get(f"{base}/users", timeout=5)
        assert users.status_code == 401 and users.json()["error"] == "missing_token"
        # Sign-up and sign-in work: the tokens are signed with the secret the bake put in .env.
        new = {"email": "dev@example.com", "name": "Dev", "password": "a long enough password"}
        assert httpx.post(f"{base}/users", json=new, timeout=30).status_code == 201
        token = httpx.post(f"{base}/auth/token", json={"email": new["email"], "password": new["password"]}, timeout=30)
        assert token.status_code == 200, token.text
        me = httpx.get(f"{base}/users/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
        assert me.status_code == 200 and me.json()["email"] == "dev@example.com", me.text
        # The sign-up's link went out, sent by the worker dev runs in its own process.
        wait_for(lambda: mailbox.recipients == ["dev@example.com"], 30, "the sign-up's mail", output)
        # Before it is ready: a banner saying where everything is, and little else (pgserver's initdb and pg_ctl
        # transcripts and platformdirs' XDG_RUNTIME_DIR warning were 22 lines and 6,207 characters of JSON). A line
        # for each migration applied is news, and they grow with the project: not counted.
        text = "".join(output)
        before_ready = text[: text.index("Application startup complete")].splitlines()
        before_ready = [line for line in before_ready if not re.search(r"INFO +applied \d{4}_\w+\.sql ", line)]
        assert len(before_ready) <= 15 and len("".join(before_ready)) < 2000, text
        assert "initdb" not in text and "pg_ctl" not in text and "XDG_RUNTIME_DIR" not in text, text
        base_url = f"http://127.0.0.1:{port}"
        assert f"  service  {base_url}\n" in text and f"  docs     {base_url}/docs\n" in text
        assert "  data     .pgdata/, kept between runs\n" in text
        assert f"  mail     SMTP 127.0.0.1:{smtp_port}, sent by the worker dev runs\n" in text
        assert f"The first admin: python -m {project.package}.admin you@example.com" in text
        # Each request is one short line: time, level, method, path, status, milliseconds, request id.
        assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} INFO    GET /users 401 [\d.]+ ms #\d+$", text, re.MULTILINE), text
        # It says where its Postgres is: a URL to paste, the one it recorded for other commands.
        printed = re.search(r"^DATABASE_URL=(\S+)", text, re.MULTILINE)
        assert printed, text
        url = printed.group(1)
        assert f"DATABASE_URL={url}\n" in (project.path / ".dev.env").read_text()
        assert has_table(url, "users")

        # The project's own migrate command, run beside dev with nothing set, reaches that same database
        # (the .env it would otherwise read points at the Docker one).
        migrate = project.run(sys.executable, "-m", f"{project.package}.migrate", timeout=60)
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        assert str(project.path / ".pgdata") in migrate.stdout and "applied 0 migration(s)" in migrate.stdout

        # A new migration file reloads the server, which applies it before it serves again.
        (project.path / "src" / project.package / "migrations" / "0004_notes.sql").write_text(NEW_TABLE)
        wait_for(lambda: has_table(url, "notes"), 60, "0004_notes.sql applied", output)
        wait_for(healthy, 60, "/health 200 after the reload", output)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        reader.join(timeout=10)
        process.stdout.close()
        smtp.stop()
    text = "".join(output)
    assert process.returncode == 0, text
    assert "0001_users.sql" in text and "0004_notes.sql" in text
    assert text.count("/docs\n") == 1, text  # the banner, once: not again when the server reloads
    # The Postgres it started lives in .pgdata/ and stopped with it; the file naming it is gone.
    data = project.path / ".pgdata"
    assert (data / "PG_VERSION").is_file()
    assert not (data / "postmaster.pid").exists(), text
    assert not (project.path / ".dev.env").exists()
