"""The lines written: an access line, a record's fields, the writer's own notes; a batch of queued items as lines."""

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import msgspec

from .tracebacks import TracebackLimit

# The logger named on the writer's own lines, about lines it could not write.
NOTES = __package__

encode_lines = msgspec.json.Encoder().encode_lines  # JSON, one object a line: a batch in one call
_encode = msgspec.json.Encoder().encode
_now = datetime.now


class AccessLine(msgspec.Struct, gc=False):
    """One access line; the fields in the order they are written. Made on the request's time (a C
    call, under a microsecond) and encoded with its batch in one call, with no Python per line."""

    time: datetime  # written as RFC 3339 in UTC, to the microsecond: "2025-01-01T12:00:00.123456Z"
    level: str
    logger: str
    message: str
    method: str
    path: str
    route: str | None  # the route that matched, None when none did (404, 405)
    status: int
    duration_ms: float
    request_id: str
    client: str | None


class JSONFormatter(logging.Formatter):
    """time, level, logger and message, the request id, the fields of a dict message, and the traceback if any."""

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as the fields of its line."""
        entry = {"time": datetime.fromtimestamp(record.created, UTC), "level": record.levelname, "logger": record.name}
        if isinstance(record.msg, dict):
            entry.update(record.msg)
        else:
            entry["message"] = record.getMessage()
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return entry

    def format(self, record: logging.LogRecord) -> str:
        return _encode(self.fields(record)).decode()


_formatter = JSONFormatter()


def lines_of(
    items: list, plain: bool, dropped: int, tracebacks: TracebackLimit
) -> tuple[list, bytes, list[threading.Event]]:
    """A batch of queued items (AccessLines, LogRecords, bytes stderr did not take, flush events; AccessLines
    alone if `plain`) as the lines to render, the bytes to write before them and the events to set once
    written; with a note of the `dropped` lines and of the tracebacks `tracebacks` left out, when due."""
    lines: list = []
    flushed = []
    raw = b""  # what stderr did not take of an earlier batch, already encoded
    if dropped:
        message = f"dropped {dropped} log lines: stderr took them slower than they came"
        lines.append(note(message, dropped=dropped))
    if plain:  # the usual batch: no Python per line
        lines += items
        items = ()
    for item in items:
        kind = type(item)
        if kind is AccessLine:
            lines.append(item)
        elif kind is bytes:
            raw += item
        elif kind is threading.Event:
            flushed.append(item)
        elif not (item.exc_info or item.exc_text) or tracebacks.allow(item):
            lines.append(_fields(item))
    if tracebacks.note_due():
        count, exceptions, seconds = tracebacks.take_count()
        message = (
            f"left out {count} records with tracebacks in {seconds:.0f} s: at most "
            f"{tracebacks.burst} at once, then {tracebacks.per_second:g} a second"
        )
        lines.append(note(message, suppressed=count, exceptions=exceptions))
    return lines, raw, flushed


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    try:
        return _formatter.fields(record)
    except Exception as exc:  # a record that cannot be formatted costs itself alone, not its batch
        return note(f"a {record.levelname} record of {record.name} could not be formatted: {exc!r}")


def note(message: str, **fields: Any) -> dict[str, Any]:
    """A line of the writer's own, about the lines it could not write."""
    return {"time": _now(UTC), "level": "WARNING", "logger": NOTES, "message": message, **fields}
