"""/health: is the service able to reach its database right now."""

from msgspec import Struct

from .auth import public
from .docs import documented
from .postgres import DB, DatabaseUnavailable
from .web import send


class Health(Struct):
    """Whether the service can reach its database."""

    status: str
    database: str


@public
@documented(responses={200: Health, 503: Health})
async def health(req, res, ctx):
    """200 when Postgres answers `SELECT 1`, 503 when it does not."""
    try:
        await ctx.peek(DB).fetchval("SELECT 1")
    except DatabaseUnavailable:
        send(res, {"status": "unavailable", "database": "unreachable"}, 503)
    else:
        send(res, {"status": "ok", "database": "ok"})


def install(app) -> None:
    """Register /health on `app`."""
    app.GET("/health", health)
