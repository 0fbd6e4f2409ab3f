"""/health: is the service able to reach its database right now."""

from .postgres import DB, DatabaseUnavailable
from .web import send


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
