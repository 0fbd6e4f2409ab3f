"""Local development without Docker: a project's `python -m <package>.dev` calls `main`.

Uses DATABASE_URL when the environment sets it; otherwise starts a Postgres of its own whose data
stays in .pgdata/ between runs. Serves with reload on port 8000, and every start and reload first
applies the migrations not applied yet. While it runs, .dev.env names its database, so the project's
other commands (anything reading the settings, config.py) reach the same one. It may run the jobs'
worker in its own process too (`working`), so that a sign-up's mail goes out with nothing else started,
and says where mail goes.
"""

import argparse
import asyncio
import importlib.util
import logging
import os
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import uvicorn

from . import server
from .app import App
from .config import DEV_ENV
from .migrate import apply

if TYPE_CHECKING:  # importing the jobs plugin imports PgQueuer: only a project that runs a worker pays for it
    from .jobs import Worker
    from .mail import Mailer

log = logging.getLogger(__name__)

# Where compose's Mailpit takes mail (its SMTP port, published on loopback) and shows it.
MAILPIT_SMTP = 1025
MAILPIT_INBOX = "http://127.0.0.1:8025"


def local_postgres(data: Path) -> str:
    """Start (or find running) a Postgres keeping its data in `data`; returns its URL."""
    # pgserver logs every initdb and pg_ctl run with its whole transcript, at INFO; platformdirs warns
    # that XDG_RUNTIME_DIR is unset (most containers and CI). Neither tells a person anything here:
    # a failure still raises, with its output.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")
    import pgserver  # a dev dependency: Postgres binaries in a wheel, no system install needed

    return pgserver.get_server(data.resolve(), cleanup_mode="stop").get_uri()


def migrating(app: App, database_url: str, migrations: Sequence[Path]) -> App:
    """`app`, applying new migrations as it starts: a new .sql file reloads the server and is applied.
    Only in dev: a production start never migrates behind anyone's back."""

    async def apply_new_migrations(app) -> None:
        # A failing migration fails the start; the server waits for the next change to try again.
        applied = await apply(database_url, migrations)
        log.info("migrations applied now: %s", ", ".join(applied) or "none")

    app.ON("startup", apply_new_migrations)
    # Run first (Heaven keeps startup hooks in a deque): sign-in reads its tables as it starts, so a
    # migration that makes them must have run by then.
    app.initializers.rotate(1)
    return app


def working(app: App, worker: "Worker", stop_within: float = 15.0) -> App:
    """`app`, running `worker`'s jobs in its own process from its startup to its shutdown, which waits at most
    `stop_within` seconds for the jobs in hand. Only in dev: in production a worker is a process of its own."""
    stop = asyncio.Event()
    running: list[asyncio.Task] = []

    async def start_worker(app) -> None:
        # PgQueuer says at INFO what each job did, which the worker's own lines say in one line each.
        logging.getLogger("pgqueuer").setLevel(logging.WARNING)
        running.append(asyncio.create_task(_work(worker, stop)))

    async def stop_worker(app) -> None:
        stop.set()
        if running:
            try:
                await asyncio.wait_for(running[0], stop_within)
            except TimeoutError:  # the job in hand runs again after the worker's heartbeat, as after a crash
                log.warning("the worker did not stop within %s s: its jobs in hand will run again", stop_within)

    app.ON("startup", start_worker)
    app.ON("shutdown", stop_worker)
    return app


async def _work(worker: "Worker", stop: asyncio.Event) -> None:
    try:
        await worker.run(stop)
    except SystemExit as exc:  # what the worker's command says when Postgres is not there: the server serves on
        log.error("the worker stopped: %s", exc)
    except Exception as exc:  # its type only: a message may quote a job's payload
        log.error("the worker stopped: %s", type(exc).__name__)


def where_mail_goes(mailer: "Mailer | None", worker: str) -> str:
    """dev's line on mail: the SMTP server `mailer` sends to, Mailpit's inbox when it is compose's, whether
    anything answers there now; `worker` says what sends it."""
    if mailer is None:
        return "none: this project sends none"
    if not mailer.host:
        return "none sent: SMTP_HOST is empty, so each mail's job fails and is held (pgq failed)"
    where = f"SMTP {mailer.host}:{mailer.port}, sent by {worker}"
    local = mailer.host in ("127.0.0.1", "localhost", "::1") and mailer.port == MAILPIT_SMTP
    if local:
        where += f"; Mailpit shows it on {MAILPIT_INBOX}"
    if not _answers(mailer.host, mailer.port):
        where += " (not up: docker compose up -d mailpit)" if local else " (nothing answers there now)"
    return where


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def shown(database_url: str) -> str:
    """The URL with its password, if it has one, masked: what dev prints."""
    parts = urlsplit(database_url)
    if not parts.password:
        return database_url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def record(database_url: str, path: Path, command: str) -> None:
    """Name dev's database in `path`, which the settings read after .env, for as long as dev runs."""
    path.write_text(
        f"# Written by `{command}` while it runs (process DEV_PID), and removed when it stops.\n"
        f"DATABASE_URL={database_url}\nDEV_PID={os.getpid()}\n",
        encoding="utf-8",
    )
    path.chmod(0o600)  # it may hold a password, as .env does


def banner(
    url: str, database_url: str, data: Path | None, reload: bool, name: str, package: str, mail: str | None = None
) -> str:
    """What dev prints once as it starts: where to call it, its database, where mail goes, how to make the first
    admin."""
    where = f"{data}/, kept between runs" if data else "the server of DATABASE_URL, from the environment"
    return "\n".join(
        [
            f"{name}, served by dev{' (reloads when a .py or .sql file changes)' if reload else ''}",
            f"  service  {url}",
            f"  docs     {url}/docs",
            f"  data     {where}",
            *([f"  mail     {mail}"] if mail else []),
            f"DATABASE_URL={shown(database_url)}  (in {DEV_ENV} while dev runs)",
            f"The first admin: python -m {package}.admin you@example.com  (asks for a password)",
        ]
    )


def main(factory: str, name: str, mail: str | None = None) -> None:
    """Serve the app that `factory` ("<package>.dev:create_dev_app", a function that takes nothing) makes,
    reloading when a .py or .sql file of its package changes; `name` is the project's, and `mail` where its
    mail goes (`where_mail_goes`), for the banner."""
    package = factory.partition(".")[0]
    parser = argparse.ArgumentParser(description=f"Serve {name} for development, with reload and a local Postgres.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-reload", dest="reload", action="store_false")
    args = parser.parse_args()

    data = None if os.environ.get("DATABASE_URL") else Path(".pgdata")
    database_url = os.environ.get("DATABASE_URL") or local_postgres(data)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(banner(f"http://{host}:{args.port}", database_url, data, args.reload, name, package, mail), flush=True)
    # The server, each process a reload starts, and other commands run here read it from these.
    os.environ["DATABASE_URL"] = database_url
    record(database_url, Path(DEV_ENV), f"python -m {factory.partition(':')[0]}")
    try:
        # The app logs each request itself (ACCESS_LOG); uvicorn's own line would say it twice.
        uvicorn.run(
            factory,
            factory=True,
            host=args.host,
            port=args.port,
            reload=args.reload,
            reload_dirs=[str(_directory(package))] if args.reload else None,
            reload_includes=["*.py", "*.sql"] if args.reload else None,
            access_log=False,
            # The edge's limits and the proxies believed, as the Dockerfile serves (server.py).
            **server.options(),
        )
    finally:
        Path(DEV_ENV).unlink(missing_ok=True)


def _directory(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"no package {package} to serve")
    return Path(spec.origin).parent
