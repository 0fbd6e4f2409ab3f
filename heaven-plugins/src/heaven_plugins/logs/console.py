"""Lines for a person at a terminal, and the choice between them and JSON lines (LOG_FORMAT)."""

import os
import sys
from datetime import datetime
from typing import Any, ClassVar

from . import ids
from .lines import AccessLine

FORMATS = ("json", "console")


class Console:
    """Lines for a person: `14:02:03.417 INFO  GET /users 200 1.84 ms #41`, a record's message with
    its logger and request id, and a traceback as Python prints it, below its line. `#41` is the
    request id without this process's prefix (X-Request-ID: 3f9a0c1be27d-41); a client's own id is shown
    as sent, cut to 16 characters. Coloured by level and by status when `colour`."""

    # ANSI colours: dim, green, yellow, red, bold red; by level, and by a status's first digit.
    LEVELS: ClassVar = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}
    STATUSES: ClassVar = {"2": "32", "3": "36", "4": "33", "5": "31"}

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def render(self, lines: list) -> bytes:
        """The text of a batch of lines: AccessLines and records' fields (JSONFormatter.fields)."""
        text = [self._access(line) if type(line) is AccessLine else self._record(line) for line in lines]
        return "".join(f"{line}\n" for line in text).encode("utf-8", "replace")

    def _paint(self, text: str, code: str | None) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code else text

    def _start(self, when: datetime, level: str) -> str:
        # Local time, to the millisecond: a person reads it against their own clock.
        clock = when.astimezone().strftime("%H:%M:%S.%f")[:-3]
        return f"{self._paint(clock, '2')} {self._paint(f'{level:<7}', self.LEVELS.get(level))} "

    def _access(self, line: AccessLine) -> str:
        status = self._paint(str(line.status), self.STATUSES.get(str(line.status)[:1]))
        request = f"{line.method} {line.path} {status} {line.duration_ms:g} ms"
        return f"{self._start(line.time, line.level)}{request} {self._paint(ids.short(line.request_id), '2')}"

    def _record(self, fields: dict[str, Any]) -> str:
        fields = dict(fields)
        when, level, logger = fields.pop("time"), fields.pop("level"), fields.pop("logger")
        message, request_id = fields.pop("message", ""), fields.pop("request_id", None)
        exception = fields.pop("exception", None)
        extra = "".join(f" {key}={value}" for key, value in fields.items())
        tail = f"({logger}){f' {ids.short(request_id)}' if request_id else ''}"
        line = f"{self._start(when, level)}{message}{extra} {self._paint(tail, '2')}"
        if exception:
            line += "\n" + self._paint(exception.rstrip("\n"), self.LEVELS["ERROR"])
        return line


def chosen_format(environ: Any = os.environ, stream: Any = None) -> str:
    """LOG_FORMAT: "json" or "console"; unset, "console" when stderr is a terminal, else "json"."""
    chosen = environ.get("LOG_FORMAT", "").strip().lower()
    if chosen and chosen not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be json or console, not {chosen!r}")
    if chosen:
        return chosen
    stream = stream or sys.stderr
    try:
        return "console" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # closed, or no file at all
        return "json"
