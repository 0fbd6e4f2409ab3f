"""The limit on records with a traceback: a storm of them is written as a few and a count."""

import collections
import logging
import time

TRACEBACK_BURST, TRACEBACKS_PER_SECOND = 10, 1.0  # then only a count of the tracebacks left out...
SUPPRESSED_EVERY = 10.0  # ...written every this many seconds while there are any


class TracebackLimit:
    """A token bucket for records with a traceback: `burst` at once, then `per_second`; the records
    beyond are counted by exception type, for a line every `every` seconds."""

    def __init__(
        self, burst: int = TRACEBACK_BURST, per_second: float = TRACEBACKS_PER_SECOND, every: float = SUPPRESSED_EVERY
    ) -> None:
        self.burst, self.per_second, self.every = burst, per_second, every
        self._tokens, self._refilled = float(burst), 0.0
        self.left_out: collections.Counter = collections.Counter()
        self._since = 0.0

    def allow(self, record: logging.LogRecord) -> bool:
        """True if the record may be written; False, counted, if it is one too many."""
        now = record.created
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.per_second)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        if not self.left_out:
            self._since = time.monotonic()
        exc_type = record.exc_info[0] if record.exc_info else None
        self.left_out[getattr(exc_type, "__name__", "unknown")] += 1
        return False

    def note_due(self) -> bool:
        """Whether the count of the records left out is due (`every` seconds after the first of them)."""
        return bool(self.left_out) and time.monotonic() - self._since >= self.every

    def take_count(self) -> tuple[int, dict[str, int], float]:
        """How many were left out, by exception type, over how many seconds; counting starts again."""
        count, exceptions = sum(self.left_out.values()), dict(self.left_out)
        self.left_out.clear()
        return count, exceptions, time.monotonic() - self._since
