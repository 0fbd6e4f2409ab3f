"""Bake projects, give them real Postgres databases, and run them as a user would."""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]


class Baked:
    """A baked project: where it is, what it was asked, and how to run its parts."""

    def __init__(self, path: Path, replay: Path, answers: dict) -> None:
        self.path, self.replay, self.answers = path, replay, answers
        self.package = answers["package_name"]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a command of the project runs in: its source importable, no stray database."""
        environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "TEST_DATABASE_URL"}}
        environ["PYTHONPATH"] = str(self.path / "src")
        environ.update(extra)
        return environ

    def run(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, cwd=self.path, env=self.env(**env), capture_output=True, text=True, timeout=timeout, check=False
        )


@pytest.fixture(scope="session")
def bake(tmp_path_factory) -> Iterator:
    """`bake(**answers)` bakes the template with those answers (defaults for the rest)."""
    home = tmp_path_factory.mktemp("cookiecutter-home")
    config = home / "config.yaml"
    config.write_text(f"cookiecutters_dir: {home / 'templates'}\nreplay_dir: {home / 'replay'}\n")

    def bake(**answers) -> Baked:
        output = tmp_path_factory.mktemp("bake")
        with hook_scripts_in(home):
            path = Path(
                cookiecutter(
                    str(TEMPLATE), no_input=True, extra_context=answers, output_dir=str(output), config_file=str(config)
                )
            )
        replay = home / "replay" / f"{TEMPLATE.name}.json"
        return Baked(path, replay, json.loads(replay.read_text())["cookiecutter"])

    return bake


@contextlib.contextmanager
def hook_scripts_in(folder: Path) -> Iterator[None]:
    # Cookiecutter copies each hook to a temporary file to run it and never deletes it: keep the
    # suite's copies in its own temporary folder rather than hundreds of them in /tmp.
    saved, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved


@pytest.fixture(scope="session")
def default_project(bake) -> Baked:
    return bake()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory) -> Iterator[str]:
    """A superuser URL of a real Postgres: TEST_DATABASE_URL when set, else a server started for this session."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def new_database(postgres_url):
    """`new_database()` creates an empty database on the session's server and returns its URL."""

    def new_database() -> str:
        name = f"bake_{uuid.uuid4().hex[:12]}"

        async def create() -> None:
            conn = await asyncpg.connect(postgres_url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))

    return new_database


def needs(binary: str | None, package: str):
    """Skip where a Debian package is missing on a developer's machine; in CI (which installs it), fail instead."""
    return pytest.mark.skipif(
        binary is None and not os.environ.get("CI"), reason=f"needs Debian's {package} (.ci/run installs it)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port on loopback where nothing listens."""
    return free_port()


class Service:
    """The baked app under real uvicorn, in its own process."""

    def __init__(self, project: Baked, database_url: str, args: tuple[str, ...] = (), **settings: str) -> None:
        self.project = project
        self.args = args  # more of uvicorn's options, such as ("--workers", "2")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.environ = project.env(DATABASE_URL=database_url, **settings)
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self, wait: bool = True) -> "Service":
        app = f"{self.project.package}.app:app"
        command = [sys.executable, "-m", "uvicorn", app, "--port", str(self.port), *self.args]
        self.process = subprocess.Popen(
            command,
            cwd=self.project.path,
            env=self.environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Read as it comes: a pipe nobody drains fills up under load and blocks uvicorn's logging.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            self.wait_until_healthy()
        return self

    def wait_until_healthy(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}:\n{self.stop()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"no 200 from /health within {timeout} s:\n{self.stop()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> str:
        """Signal uvicorn, wait for it to end, and return everything it printed."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        self.process.stdout.close()
        return self.output

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        """Everything uvicorn has printed so far."""
        return "".join(self.lines)


@pytest.fixture
def service():
    """`service(project, database_url, **settings)` starts the app under uvicorn (with `args=(...)` of
    its options); stopped after the test."""
    started: list[Service] = []

    def service(project: Baked, database_url: str, start: bool = True, args: tuple = (), **settings: str) -> Service:
        svc = Service(project, database_url, args, **settings)
        started.append(svc)
        return svc.start() if start else svc

    yield service
    for svc in started:
        if svc.process and svc.process.poll() is None:
            svc.stop(signal.SIGKILL)


FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture
def figures(request):
    """`figures(line)` records what a test measured; the lines are printed at the end of the run."""

    def record(line: str) -> None:
        print(line)
        request.config.stash.setdefault(FIGURES, []).append(f"{request.node.name}: {line}")

    return record


def pytest_terminal_summary(terminalreporter, config) -> None:
    if config.stash.get(FIGURES, None):
        terminalreporter.section("figures")
        for line in config.stash[FIGURES]:
            terminalreporter.write_line(line)
