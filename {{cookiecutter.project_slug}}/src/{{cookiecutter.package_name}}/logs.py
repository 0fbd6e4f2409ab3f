"""Logs as JSON lines: every record one object on one line, and one access record per request."""

import logging
import time
from time import perf_counter

import msgspec

# The access records, one per request answered by a handler: {"logger": "<package>.access", "method", ...}.
access = logging.getLogger(f"{__package__}.access")

_encode = msgspec.json.Encoder().encode


class JSONFormatter(logging.Formatter):
    """time, level, logger and message, the fields of a dict message, and the traceback if any."""

    _second, _stamp = 0, ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once a second, not once a record
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        if isinstance(record.msg, dict):
            entry.update(record.msg)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


def log_request(req, res, route: str, started: float) -> None:
    """One access record: method, path (never the query string, which may carry secrets), route, status, time."""
    if access.isEnabledFor(logging.INFO):
        fields = {
            "message": "request",
            "method": req.method,
            "path": req.url,
            "route": route,
            "status": res.status,
            "duration_ms": round((perf_counter() - started) * 1000, 2),
        }
        # handle(makeRecord(...)) rather than info(): the same record, without info() walking
        # the stack to find the caller, which this record never shows.
        access.handle(access.makeRecord(access.name, logging.INFO, "", 0, fields, None, None))
