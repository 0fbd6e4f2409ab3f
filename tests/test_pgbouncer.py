"""The baked service behind a real PgBouncer in transaction mode: STATEMENT_CACHE_SIZE=0 is all it needs."""

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
from conftest import FAST_HASHING, admin_headers, free_port, needs

PGBOUNCER = shutil.which("pgbouncer") or shutil.which("/usr/sbin/pgbouncer")
pytestmark = needs(PGBOUNCER, "pgbouncer")


@contextlib.contextmanager
def pgbouncer(
    database_url: str, pool_size: int = 2, *, name: str = "", user: str = "", password: str = "", **settings: str
):
    """PgBouncer in transaction mode in front of `database_url`; yields a URL for the same database through it.

    Clients ask for the database `name` as `user` (by default, the names in `database_url`); with a
    `password`, that user must give it (SCRAM), as PgBouncer in the Kubernetes manifests requires.
    `settings` are more lines of pgbouncer.ini (`query_wait_timeout="5"`).
    """
    url = urlsplit(database_url)
    database = url.path.lstrip("/")
    server_user = unquote(url.username or "postgres")
    name, user = name or database, user or server_user
    host = parse_qs(url.query).get("host", [url.hostname or "127.0.0.1"])[0]
    server = f"host={host} port={url.port or 5432} dbname={database} user={server_user}"
    if url.password:
        server += f" password={unquote(url.password)}"
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        folder.chmod(0o755)  # pgbouncer reads its files as the user it switches to
        (folder / "users.txt").write_text(f'"{user}" "{password}"\n')
        (folder / "pgbouncer.ini").write_text(
            f"[databases]\n{name} = {server}\n\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = {'scram-sha-256' if password else 'trust'}\nauth_file = {folder / 'users.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
            + "".join(f"{key} = {value}\n" for key, value in settings.items())
        )
        for path in folder.iterdir():
            path.chmod(0o644)
        command = [PGBOUNCER, str(folder / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root; run it as the owner of Postgres' socket
            owner = os.stat(host).st_uid if host.startswith("/") else pwd.getpwnam("nobody").pw_uid
            command[1:1] = ["-u", pwd.getpwuid(owner).pw_name]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start:\n{process.communicate(timeout=5)[0]}")
                time.sleep(0.05)
            yield f"postgresql://{user}@127.0.0.1:{port}/{name}"
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=10)


async def exercise(base_url: str, headers: dict[str, str], n: int = 40) -> dict[str, set[int]]:
    """Many requests at once, so PgBouncer's two server connections are shared between them; an admin's."""
    async with httpx.AsyncClient(base_url=base_url, timeout=20, headers=headers) as http:
        new = [{"email": f"b{i}@example.com", "name": f"B{i}", "password": "a long enough password"} for i in range(n)]
        created = await asyncio.gather(*(http.post("/users", json=user) for user in new))
        ids = [r.json()["id"] for r in created if r.status_code == 201]
        read = await asyncio.gather(
            *(http.get(f"/users/{i}") for i in ids), *(http.get("/users", params={"limit": 5}) for _ in range(n))
        )
        patched = await asyncio.gather(*(http.patch(f"/users/{i}", json={"name": "Renamed"}) for i in ids))
        deleted = await asyncio.gather(*(http.delete(f"/users/{i}") for i in ids))
        gone = await asyncio.gather(*(http.get(f"/users/{i}") for i in ids[:5]))
        return {
            name: {r.status_code for r in responses}
            for name, responses in [
                ("created", created),
                ("read", read),
                ("patched", patched),
                ("deleted", deleted),
                ("gone", gone),
            ]
        }


def migrate(project, url: str) -> None:
    result = project.run(sys.executable, "-m", f"{project.package}.migrate", DATABASE_URL=url)
    assert result.returncode == 0, result.stderr


def test_users_through_pgbouncer_in_transaction_mode(default_project, new_database, service):
    direct = new_database()
    migrate(default_project, direct)  # straight to Postgres: the migration lock is a session lock
    with pgbouncer(direct) as pooled:
        svc = service(default_project, pooled, STATEMENT_CACHE_SIZE="0", POOL_MAX_SIZE="10", **FAST_HASHING)
        # Signed in through the pooler too; the admin command connects straight to Postgres, as migrations do.
        statuses = asyncio.run(exercise(svc.url, admin_headers(default_project, direct, svc.url)))
        output = svc.stop()
    assert statuses == {"created": {201}, "read": {200}, "patched": {200}, "deleted": {204}, "gone": {404}}, output
    assert "prepared statement" not in output


def test_without_the_setting_pgbouncer_breaks_prepared_statements(default_project, new_database, service):
    # The control: the same load with asyncpg's statement cache on fails, so the test above really ran
    # through a pooler that hands transactions to different server connections.
    direct = new_database()
    migrate(default_project, direct)
    headers = admin_headers(default_project, direct, service(default_project, direct, **FAST_HASHING).url)
    with pgbouncer(direct) as pooled:
        svc = service(default_project, pooled, STATEMENT_CACHE_SIZE="100", POOL_MAX_SIZE="10", **FAST_HASHING)
        statuses = asyncio.run(exercise(svc.url, headers))
        output = svc.stop()
    # Which request meets a statement prepared on another server connection first varies from run to run.
    assert 500 in set().union(*statuses.values()), statuses
    assert "prepared statement" in output
