"""The five servers under test: what each one is, and how uvicorn finds and configures it."""

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Contender:
    name: str  # a key in results.json
    label: str  # how tables and charts name it
    app: str  # uvicorn's module:attribute
    app_dir: Path | None  # where uvicorn imports it from; None for the installed baked project

    def env(self, dsn: str, pool_size: int) -> dict[str, str]:
        # The baked service reads its settings from the environment; the comparison apps read these two.
        return {
            "DATABASE_URL": dsn,
            "POOL_SIZE": str(pool_size),
            "POOL_MIN_SIZE": str(pool_size),
            "POOL_MAX_SIZE": str(pool_size),
            "LOG_LEVEL": "WARNING",
            "ACCESS_LOG": "false",  # like uvicorn's --no-access-log, which every contender runs with
        }


BAKED = Contender("baked", "baked service", "heaven_service.app:app", None)
# Not one of the five: the baked service with its /users routes public, to count the sign-in check (signin.py).
BAKED_PUBLIC = Contender("baked_public", "baked service, no sign-in", "baked_public:app", HERE)
FLOOR = Contender("raw", "raw ASGI (floor)", "raw:app", HERE)
CONTENDERS = [
    BAKED,
    Contender("heaven_minimal", "minimal Heaven", "heaven_minimal:app", HERE),
    FLOOR,
    Contender("fastapi_asyncpg", "FastAPI + asyncpg", "fastapi_asyncpg:app", HERE),
    Contender("fastapi_sqlalchemy", "FastAPI + SQLAlchemy", "fastapi_sqlalchemy:app", HERE),
]
