"""The servers under test: the baked service as shipped and with its defaults off, and the five it is
measured against; what each one is, and how uvicorn finds and configures it."""

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


# What the baked service does by default beyond answering: a JSON access line per request (to stderr, here a
# file), /metrics counting every request, an X-Request-ID on every answer, INFO logging. The headline measures it
# so; these settings turn every one of them off (request ids and the sign-in check stay: they have no switch).
DEFAULTS_OFF = (("ACCESS_LOG", "false"), ("METRICS", "false"), ("LOG_LEVEL", "WARNING"))


@dataclass(frozen=True)
class Contender:
    name: str  # a key in results.json
    label: str  # how tables and charts name it
    app: str  # uvicorn's module:attribute
    app_dir: Path | None  # where uvicorn imports it from; None for the installed baked project
    settings: tuple[tuple[str, str], ...] = ()  # the baked service's, beyond the database and the pool
    http: str = "httptools"  # uvicorn's --http: the baked service's own protocol, with the edge's limits, as shipped

    def env(self, dsn: str, pool_size: int) -> dict[str, str]:
        # The baked service reads its settings from the environment; the comparison apps read these two.
        return {
            "DATABASE_URL": dsn,
            "POOL_SIZE": str(pool_size),
            "POOL_MIN_SIZE": str(pool_size),
            "POOL_MAX_SIZE": str(pool_size),
            **dict(self.settings),
        }


# The Dockerfile serves the baked service with uvicorn's httptools protocol under the edge's limits (server.py).
EDGE = "heaven_plugins.server:HTTPProtocol"
BAKED = Contender("baked", "baked service", "heaven_service.app:app", None, http=EDGE)
BAKED_QUIET = Contender("baked_quiet", "baked, defaults off", "heaven_service.app:app", None, DEFAULTS_OFF, EDGE)
# Not contenders: the baked service as shipped, whose access line and /metrics counting a signal turns off and on
# again, to price each default's time within one process; and with each default off, to count its instructions
# (defaults.py), keyed by the names defaults.SWITCHES gives them.
BAKED_TOGGLED = Contender("baked_toggled", "baked, defaults toggled", "baked_toggled:app", HERE, http=EDGE)
DEFAULT_OFF = {
    "access_log": Contender(
        "baked_no_access_log", "baked, ACCESS_LOG=false", BAKED.app, None, (("ACCESS_LOG", "false"),), EDGE
    ),
    "metrics": Contender("baked_no_metrics", "baked, METRICS=false", BAKED.app, None, (("METRICS", "false"),), EDGE),
}
# Not a contender: the baked service as shipped with its /users routes public, to count the sign-in check (signin.py).
BAKED_PUBLIC = Contender("baked_public", "baked service, no sign-in", "baked_public:app", HERE, http=EDGE)
# The least a service on this stack does: raw ASGI, asyncpg, msgspec, its connections given back without asyncpg's
# reset round trip, which the baked service skips too when a query leaves nothing on the session.
FLOOR = Contender("floor", "raw ASGI, no reset (floor)", "floor:app", HERE)
RAW = Contender("raw", "raw ASGI, asyncpg's reset", "raw:app", HERE)
CONTENDERS = [
    BAKED,
    BAKED_QUIET,
    Contender("heaven_minimal", "minimal Heaven", "heaven_minimal:app", HERE),
    FLOOR,
    RAW,
    Contender("fastapi_asyncpg", "FastAPI + asyncpg", "fastapi_asyncpg:app", HERE),
    Contender("fastapi_sqlalchemy", "FastAPI + SQLAlchemy", "fastapi_sqlalchemy:app", HERE),
]
