"""The access line: one per request answered, on the `heaven_plugins.access` logger."""

import logging
from datetime import UTC, datetime

from .ids import REQUEST_ID
from .lines import AccessLine
from .writer import writer

# Its lines read {"logger": "heaven_plugins.access", "message": "request", ...}; the name is kept across versions.
access = logging.getLogger("heaven_plugins.access")

_now = datetime.now


def log_request(scope: dict, res, route: str | None, seconds: float) -> None:
    """The access line of one request (an App observer, when `access` logs INFO at the app's
    creation): method, path (never the query string, which may carry secrets), route, status, time
    taken, request id and client address."""
    client = scope.get("client")
    line = AccessLine(
        _now(UTC),
        "INFO",
        access.name,
        "request",
        scope["method"],
        scope["path"],
        route,
        res.status,
        int(seconds * 100_000) / 100,  # to 10 µs; round(seconds * 1000, 2) costs twice as much
        REQUEST_ID.get(),
        client[0] if client else None,
    )
    writer.add_soon(line)
