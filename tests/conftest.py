"""Bake projects, give them real Postgres databases, and run them as a user would."""

import asyncio
import contextlib
import json
import os
import re
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
from packaging.utils import canonicalize_name

TEMPLATE = Path(__file__).resolve().parents[1]


class Baked:
    """A baked project: where it is, what it was asked, and how to run its parts."""

    def __init__(self, path: Path, replay: Path, answers: dict) -> None:
        self.path, self.replay, self.answers = path, replay, answers
        self.package = answers["package_name"]

    @property
    def sources(self) -> list[Path]:
        """What `make install` puts on the path: the project's package, and the library it carries in vendor/."""
        return [self.path / "src", self.path / "vendor" / "heaven-plugins" / "src"]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a command of the project runs in: its source importable, no stray database."""
        environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "TEST_DATABASE_URL"}}
        environ["PYTHONPATH"] = os.pathsep.join(map(str, self.sources))
        # The project's own pytest runs keep their temporary folders beside the bake, out of this run's: a pytest
        # run makes <root>/pytest-of-<user> private (0700) as it starts, and when the suite runs as root, the
        # Postgres and PgBouncer of this run's tests run as other users, who must pass through that folder.
        environ["PYTEST_DEBUG_TEMPROOT"] = str(self.path.parent)
        environ.update(extra)
        return environ

    def run(
        self, *args: str, timeout: float = 120, input: str | None = None, **env: str
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            args,
            cwd=self.path,
            env=self.env(**env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
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


class LockedVenv:
    """A fresh venv, made as a bake's owner makes it: the Dockerfile's install lines, then `make install`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.python = str(folder / "bin" / "python")
        self.environ = {
            k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "DATABASE_URL", "PYTHONPATH"}
        }
        # The venv's commands first, once it exists; this Python's until then (for `python -m venv`).
        path = [str(folder / "bin"), str(Path(sys.executable).parent), self.environ["PATH"]]
        self.environ["PATH"] = os.pathsep.join(path)
        self.environ["PYTEST_DEBUG_TEMPROOT"] = str(folder.parent)  # as Baked.env() does, and why
        self.seconds: dict[str, float] = {}  # how long each step took
        self.installed: dict[str, dict[str, str]] = {}  # {step: what the venv held after it}

    def run(self, command: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=self.environ, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-5000:]}{done.stderr[-3000:]}"
        return done

    def step(self, name: str, commands: list[str], project: Path) -> None:
        started = time.perf_counter()
        for command in commands:
            self.run(command, project)
        self.seconds[name] = time.perf_counter() - started
        self.installed[name] = installed(self.python, self.run, project.name)


@pytest.fixture(scope="session")
def locked_venv(bake, tmp_path_factory) -> tuple[LockedVenv, Baked]:
    """One venv for the tests that need the locks installed (in one xdist group, LOCKED_VENV, so they share it):
    the image's lock by the Dockerfile's lines, then `make install` as the README says, in a bake whose requests
    carry the database as `ctx.database`, not the default `ctx.db`."""
    baked = bake(project_name="Other Context", context_name="database")
    venv = LockedVenv(tmp_path_factory.mktemp("locked") / "venv")
    from test_container import instructions

    steps = instructions((baked.path / "Dockerfile").read_text())
    build_stage = steps[: [op for op, _ in steps].index("FROM", 1)]
    image = [args.replace("/venv", str(venv.folder)) for op, args in build_stage if op == "RUN"]
    venv.step("image", image, baked.path)
    makefile = (baked.path / "Makefile").read_text()
    venv.step("make install", [re.search(r"^install:.*\n\t(.+)$", makefile, re.M).group(1)], baked.path)
    return venv, baked


# The tests that use locked_venv: on one worker, one after the other, so that the venv is made once.
LOCKED_VENV = pytest.mark.xdist_group("locked-venv")


def installed(python: str, run, project: str) -> dict[str, str]:
    """{name: version} of what the venv holds, but for the project, its library and what `python -m venv` put
    there."""
    listed = json.loads(run(f"{python} -m pip list --format=json").stdout)
    # The library too: the project carries it (vendor/), so the locks leave it out.
    ignored = {canonicalize_name(project), "heaven-plugins", "pip", "setuptools", "wheel"}
    return {canonicalize_name(p["name"]): p["version"] for p in listed if canonicalize_name(p["name"]) not in ignored}


# The suite runs on three pytest-xdist workers (pyproject's addopts). Tests that measure time share one group, which
# --dist loadgroup runs on one worker, one test at a time: never beside each other. Add a module of such tests here.
TIMING_MODULES = {"test_reliability.py", "test_faults.py"}
# Longest first, so that a worker starts it at once: the bench's smoke run. It checks answers, not speed, but its
# callgrind runs take a whole core: beside the timing group they held /health past its bound twice (1.00 and 1.03 s
# against 1.0). So it runs in that group, first, and the other workers take the rest.
FIRST_MODULES = {"smoke_test.py"}
# Next, for a second worker: the library's whole suite, run in one test (test_library.py), the longest of all.
NEXT_MODULES = {"test_library.py"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if item.path.name in TIMING_MODULES | FIRST_MODULES:
            item.add_marker(pytest.mark.xdist_group("timing"))
    # Stable: the rest keep their order.
    items.sort(key=lambda item: (item.path.name not in FIRST_MODULES, item.path.name not in NEXT_MODULES))


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


# argon2 at one pass over 1 MiB, about 1 ms a hash: for tests that create users by the hundred to load
# the pool and the HTTP path, which hashing at the shipped cost (~0.1 s of CPU each) would drown.
FAST_HASHING = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "1024"}
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "an admin's long password"


def make_admin(project: Baked, database_url: str, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
    """The baked README's way to the first admin: `python -m <package>.admin EMAIL`, the password on stdin."""
    made = project.run(
        sys.executable, "-m", f"{project.package}.admin", email, input=f"{password}\n", DATABASE_URL=database_url
    )
    assert made.returncode == 0, made.stdout + made.stderr


def sign_in(url: str, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> dict[str, str]:
    """POST /auth/token on the service at `url`: the header that carries the token."""
    response = httpx.post(f"{url}/auth/token", json={"email": email, "password": password}, timeout=30)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def admin_headers(project: Baked, database_url: str, url: str) -> dict[str, str]:
    """An admin made with the admin command, signed in to the service at `url`."""
    make_admin(project, database_url)
    return sign_in(url)


# Collected where the reports arrive: the one process without pytest-xdist, the controller with it (a
# worker's own config, where a fixture could stash them, is not the one that prints the summary).
FIGURES: list[str] = []


@pytest.fixture
def figures(request):
    """`figures(line)` records what a test measured; the lines are printed at the end of the run."""

    def record(line: str) -> None:
        print(line)
        request.node.user_properties.append(("figure", f"{request.node.name}: {line}"))

    return record


def pytest_runtest_logreport(report) -> None:
    if report.when == "teardown":  # the last report of a test, with every line it recorded
        FIGURES.extend(value for key, value in report.user_properties if key == "figure")


def pytest_terminal_summary(terminalreporter, config) -> None:
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
