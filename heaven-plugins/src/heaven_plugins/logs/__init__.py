"""Logs on stderr, written a batch at a time off the request path, with request ids: JSON lines for
machines, or a short coloured line each for a person at a terminal (LOG_FORMAT).

    ids.py         request ids: the current one (REQUEST_ID), a client's kept when sane, new ones
    access_log.py  the access line of each request answered (log_request, the `heaven_plugins.access` logger)
    writer.py      the writer: queues, batches, the thread, flush, lines dropped (LogWriter, JSONHandler)
    lines.py       what a batch says: access lines, records' fields (JSONFormatter), the writer's notes
    tracebacks.py  a storm of tracebacks written as a few and a count (TracebackLimit)
    stderr.py      bytes to stderr in whole lines, never cut by another process's
    console.py     lines for a person (Console), and LOG_FORMAT (chosen_format)
"""

import logging
import os
import sys

from .access_log import access, log_request
from .console import FORMATS, Console, chosen_format
from .ids import REQUEST_ID, SANE_REQUEST_ID
from .lines import AccessLine, JSONFormatter, encode_lines
from .tracebacks import SUPPRESSED_EVERY, TRACEBACK_BURST, TRACEBACKS_PER_SECOND, TracebackLimit
from .writer import BATCH_SECONDS, CAPACITY, FLUSH_SECONDS, JSONHandler, LogWriter, write_through, writer

__all__ = [
    "BATCH_SECONDS",
    "CAPACITY",
    "FLUSH_SECONDS",
    "FORMATS",
    "REQUEST_ID",
    "SANE_REQUEST_ID",
    "SUPPRESSED_EVERY",
    "TRACEBACKS_PER_SECOND",
    "TRACEBACK_BURST",
    "AccessLine",
    "Console",
    "JSONFormatter",
    "JSONHandler",
    "LogWriter",
    "TracebackLimit",
    "access",
    "chosen_format",
    "configure",
    "log_request",
    "write_through",
    "writer",
]

# The library's loggers, all under one name: configure() sets their level.
LIBRARY = __name__.partition(".")[0]


def configure(level: str, log_format: str | None = None) -> None:
    """Send every record to stderr through the writer: this library's, uvicorn's (which configured
    its own before importing the app) and any library's such as asyncpg's, at `level`; one JSON
    object a line, or a line for a person with `log_format` "console" (default: chosen_format()).
    uvicorn's own access line is turned off: the app writes one per request."""
    log_format = log_format or chosen_format()
    if log_format == "console":
        # Colour for a terminal, unless NO_COLOR asks for none (https://no-color.org).
        colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        writer.render = Console(colour).render
    else:
        writer.render = encode_lines
    root = logging.getLogger()
    if not any(isinstance(handler, JSONHandler) for handler in root.handlers):
        root.addHandler(JSONHandler(writer))
    root.setLevel(level)
    logging.getLogger(LIBRARY).setLevel(level)
    # Records need not find their thread's and process's names, which no line here shows.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.captureWarnings(True)  # warnings become records too, not text on stderr
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # With no handler and no propagation uvicorn skips its access line altogether (hasHandlers()).
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
