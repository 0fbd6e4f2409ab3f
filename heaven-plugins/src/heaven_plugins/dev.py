"""Local development without Docker: a project's `python -m <package>.dev` calls `main`.

Uses DATABASE_URL when the environment sets it; otherwise starts a Postgres of its own whose data
stays in .pgdata/ between runs. Serves with reload on port 8000, and every start and reload first
applies the migrations not applied yet. While it runs, .dev.env names its database, so the project's
other commands (anything reading the settings, config.py) reach the same one.
"""

import argparse
import importlib.util
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from . import server
from .app import App
from .config import DEV_ENV
from .migrate import apply

log = logging.getLogger(__name__)


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


def banner(url: str, database_url: str, data: Path | None, reload: bool, name: str, package: str) -> str:
    """What dev prints once as it starts: where to call it, its database, how to make the first admin."""
    where = f"{data}/, kept between runs" if data else "the server of DATABASE_URL, from the environment"
    return "\n".join(
        [
            f"{name}, served by dev{' (reloads when a .py or .sql file changes)' if reload else ''}",
            f"  service  {url}",
            f"  docs     {url}/docs",
            f"  data     {where}",
            f"DATABASE_URL={shown(database_url)}  (in {DEV_ENV} while dev runs)",
            f"The first admin: python -m {package}.admin you@example.com  (asks for a password)",
        ]
    )


def main(factory: str, name: str) -> None:
    """Serve the app that `factory` ("<package>.dev:create_dev_app", a function that takes nothing) makes,
    reloading when a .py or .sql file of its package changes; `name` is the project's, for the banner."""
    package = factory.partition(".")[0]
    parser = argparse.ArgumentParser(description=f"Serve {name} for development, with reload and a local Postgres.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-reload", dest="reload", action="store_false")
    args = parser.parse_args()

    data = None if os.environ.get("DATABASE_URL") else Path(".pgdata")
    database_url = os.environ.get("DATABASE_URL") or local_postgres(data)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(banner(f"http://{host}:{args.port}", database_url, data, args.reload, name, package), flush=True)
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
