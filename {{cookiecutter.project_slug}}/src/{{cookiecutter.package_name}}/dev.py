"""Local development without Docker: `python -m {{ cookiecutter.package_name }}.dev`.

Uses DATABASE_URL when the environment sets it; otherwise starts a Postgres of its own whose data
stays in .pgdata/ between runs. Applies the migrations, then serves with reload on port 8000.
"""

import argparse
import asyncio
import os
from pathlib import Path

import asyncpg
import uvicorn

from .migrate import migrate
from .postgres import describe


def local_postgres(data: Path) -> str:
    """Start (or find running) a Postgres keeping its data in `data`; returns its URL."""
    import pgserver  # a dev dependency: Postgres binaries in a wheel, no system install needed

    return pgserver.get_server(data.resolve(), cleanup_mode="stop").get_uri()


async def apply_migrations(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-reload", dest="reload", action="store_false")
    args = parser.parse_args()

    database_url = os.environ.get("DATABASE_URL") or local_postgres(Path(".pgdata"))
    applied = asyncio.run(apply_migrations(database_url))
    print(f"Postgres at {describe(database_url)}; migrations applied now: {applied or 'none'}", flush=True)
    # The server (and each process reload starts) reads its settings from the environment.
    os.environ["DATABASE_URL"] = database_url
    # The app logs each request itself (ACCESS_LOG); uvicorn's own line would say it twice.
    uvicorn.run(
        "{{ cookiecutter.package_name }}.app:app",
        host=args.host,
        port=args.port,
        reload=args.reload,
        access_log=False,
    )


if __name__ == "__main__":
    main()
