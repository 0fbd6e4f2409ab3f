"""The fleet on one machine: requests/s of 1, 2 and 3 replicas of the baked service behind HAProxy (the bake's
deploy/haproxy/haproxy.cfg) and PgBouncer in transaction mode, against one replica served bare, and the connections
each layout holds to PgBouncer and to Postgres.

    python bench/fleet.py [--seconds 5] [--connections 32]

Run from the template's own venv (requirements-dev.txt: cookiecutter, pgserver, the library's dependencies); needs
Debian's haproxy, pgbouncer and wrk. It bakes the template's defaults into a temporary folder, serves each replica as
the image does (`--http heaven_plugins.server:HTTPProtocol`, the Kubernetes manifest's POOL_MAX_SIZE=10 and
STATEMENT_CACHE_SIZE=0), signs in an admin and has wrk ask `GET /users?limit=20` with its token. Nothing is pinned to
a core: every process shares the machine, as a fleet on one machine does. Not part of the bench's smoke run.
"""

import argparse
import asyncio
import contextlib
import json
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
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent
sys.path.insert(0, str(HERE))
from load import REPORT_LUA  # noqa: E402  (the bench's own wrk report, beside this file)

ADMIN, PASSWORD = "admin@example.com", "an admin's long password"
POOL_MAX_SIZE = 10  # deploy/kubernetes/base/deployment.yaml
PGBOUNCER_POOL = 20  # DEFAULT_POOL_SIZE of deploy/kubernetes/base/pgbouncer-deployment.yaml
LAYOUTS = [("bare", 1), ("haproxy", 1), ("haproxy", 2), ("haproxy", 3)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"fleet: {what} did not start")
        time.sleep(0.05)


class Processes:
    """Every process started, stopped in reverse order at the end, whatever happens."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, command: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            self.stop(process)


def bake(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE), "-o", str(folder)],
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(folder)},
    )
    (project,) = [path for path in folder.iterdir() if (path / "pyproject.toml").exists()]
    return project


def pgbouncer(processes: Processes, folder: Path, database_url: str) -> str:
    """PgBouncer in transaction mode in front of `database_url` (a pgserver unix-socket URL); its URL."""
    url = urlsplit(database_url)
    host = parse_qs(url.query)["host"][0]
    database, user = url.path.lstrip("/"), url.username or "postgres"
    port = free_port()
    folder.mkdir()
    folder.chmod(0o755)
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n{database} = host={host} port={url.port or 5432} dbname={database} user={user}\n\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\npool_mode = transaction\n"
        f"default_pool_size = {PGBOUNCER_POOL}\nmax_client_conn = 1000\n"
    )
    for path in folder.iterdir():
        path.chmod(0o644)
    command = [shutil.which("pgbouncer") or "/usr/sbin/pgbouncer", str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root: as the owner of Postgres' socket
        command[1:1] = ["-u", pwd.getpwuid(os.stat(host).st_uid).pw_name]
    wait_for_port(port, processes.start(command), "pgbouncer")
    return f"postgresql://{user}@127.0.0.1:{port}/{database}"


def haproxy(processes: Processes, project: Path, folder: Path, ports: list[int]) -> tuple[int, subprocess.Popen]:
    """HAProxy with the bake's config, its one server-template line replaced by these replicas."""
    lines = (project / "deploy" / "haproxy" / "haproxy.cfg").read_text().splitlines()
    (at,) = [n for n, line in enumerate(lines) if line.split()[:1] == ["server-template"]]
    lines[at : at + 1] = [f"    server app{n} 127.0.0.1:{port}" for n, port in enumerate(ports)]
    config = folder / f"haproxy-{len(ports)}.cfg"
    config.write_text("\n".join(lines) + "\n")
    port = free_port()
    env = {**os.environ, "EDGE_BIND": f"127.0.0.1:{port}"}
    process = processes.start([shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(config)], env=env)
    wait_for_port(port, process, "haproxy")
    return port, process


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict:
    command = [shutil.which("wrk") or "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30)
    return json.loads(done.stdout.strip().splitlines()[-1])


async def connections(database_url: str) -> int:
    """Server connections Postgres holds for clients now (this one's excluded)."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="seconds of load per layout (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk's connections (default 32)")
    args = parser.parse_args()
    import pgserver  # the template's dev dependency; imported here so that --help needs none

    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="fleet-") as directory:
        folder = Path(directory)
        folder.chmod(0o755)  # Postgres and PgBouncer run as another user when we are root
        try:
            project = bake(folder / "bake")
            package = json.loads((project / ".cruft.json").read_text())["context"]["cookiecutter"]["package_name"]
            server = pgserver.get_server(folder / "pgdata", cleanup_mode="stop")
            direct = server.get_uri()
            sources = [project / "src", project / "vendor" / "heaven-plugins" / "src"]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, sources)), "DATABASE_URL": direct}
            env.pop("FORWARDED_ALLOW_IPS", None)
            subprocess.run([sys.executable, "-m", f"{package}.migrate"], cwd=project, env=env, check=True, timeout=60)
            subprocess.run(
                [sys.executable, "-m", f"{package}.admin", ADMIN],
                cwd=project,
                env=env,
                input=f"{PASSWORD}\n",
                text=True,
                check=True,
                timeout=60,
                capture_output=True,
            )
            pooled = pgbouncer(processes, folder / "pgbouncer", direct)
            replica_env = {
                **env,
                "DATABASE_URL": pooled,
                "STATEMENT_CACHE_SIZE": "0",
                "POOL_MAX_SIZE": str(POOL_MAX_SIZE),
                "FORWARDED_ALLOW_IPS": "127.0.0.1",
            }
            rows = []
            for front, count in LAYOUTS:
                replicas, ports = [], []
                for _ in range(count):
                    port = free_port()
                    command = [sys.executable, "-m", "uvicorn", f"{package}.app:app", "--port", str(port)]
                    command += ["--no-access-log", "--http", "heaven_plugins.server:HTTPProtocol"]
                    replicas.append(processes.start(command, cwd=project, env=replica_env))
                    ports.append(port)
                for port, process in zip(ports, replicas, strict=True):
                    wait_for_port(port, process, "a replica")
                edge = None
                url = f"http://127.0.0.1:{ports[0]}"
                if front == "haproxy":
                    edge_port, edge = haproxy(processes, project, folder, ports)
                    url = f"http://127.0.0.1:{edge_port}"
                    time.sleep(2.5)  # two passed checks of each replica (rise 2, inter 1 s)
                token = httpx.post(f"{url}/auth/token", json={"email": ADMIN, "password": PASSWORD}, timeout=30)
                header = f'wrk.headers["Authorization"] = "Bearer {token.json()["access_token"]}"\n'
                script = folder / "report.lua"
                script.write_text(header + REPORT_LUA)
                wrk(f"{url}/users?limit=20", script, args.connections, 1)  # warm up: pools filled, code paths hot
                result = wrk(f"{url}/users?limit=20", script, args.connections, args.seconds)
                held = asyncio.run(connections(direct))
                errors = sum(result[kind] for kind in ("connect", "read", "write", "status", "timeout"))
                rows.append(
                    (
                        f"{count} replica{'s' if count > 1 else ''}, {'behind HAProxy' if edge else 'bare'}",
                        round(result["requests"] / (result["duration_us"] / 1e6)),
                        result["p50_us"] / 1000,
                        result["p99_us"] / 1000,
                        errors,
                        count * (POOL_MAX_SIZE + 1),
                        held,
                    )
                )
                for process in [edge, *replicas] if edge else replicas:
                    processes.stop(process)
        finally:
            processes.stop_all()
            with contextlib.suppress(Exception):
                server.cleanup()
    cores = len(os.sched_getaffinity(0))
    print(f"\n{cores} cores; wrk -c{args.connections} -d{args.seconds}s GET /users?limit=20 as an admin\n")
    print("| layout | requests/s | p50 ms | p99 ms | errors | client connections to PgBouncer, at most | ", end="")
    print("Postgres server connections after |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(f"{value:.2f}" if isinstance(value, float) else str(value) for value in row) + " |")


if __name__ == "__main__":
    main()
