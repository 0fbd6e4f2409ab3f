"""The no-Docker path: `python -m <package>.dev` with no DATABASE_URL starts its own Postgres, migrates and serves."""

import contextlib
import signal
import subprocess
import sys
import time

import httpx
from conftest import free_port


def test_dev_serves_users_on_a_postgres_of_its_own(default_project):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", f"{default_project.package}.dev", "--no-reload", "--port", str(port)],
        cwd=default_project.path,
        env=default_project.env(),  # no DATABASE_URL, no TEST_DATABASE_URL
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                if health.status_code == 200:
                    break
            time.sleep(0.1)
        assert health is not None and health.status_code == 200, process.poll()
        users = httpx.get(f"http://127.0.0.1:{port}/users", timeout=5)
        assert users.status_code == 401 and users.json()["error"] == "missing_token"  # signed in with .env's secret
        new = {"email": "dev@example.com", "name": "Dev", "password": "a long enough password"}
        assert httpx.post(f"http://127.0.0.1:{port}/users", json=new, timeout=30).status_code == 201
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert "migrations applied now: ['0001_users.sql', '0002_sign_in.sql']" in output
    # The Postgres it started lives in .pgdata/ and stopped with it.
    data = default_project.path / ".pgdata"
    assert (data / "PG_VERSION").is_file()
    assert not (data / "postmaster.pid").exists(), output
