"""Logs on stderr, written a batch at a time off the request path, with request ids: JSON lines for
machines, or a short coloured line each for a person at a terminal (LOG_FORMAT)."""

import asyncio
import collections
import functools
import itertools
import logging
import os
import re
import secrets
import select
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec

# The access lines, one per request answered: {"logger": "<package>.access", "message": "request", ...}.
access = logging.getLogger(f"{__package__}.access")
log = logging.getLogger(__name__)

# The id of the request being answered, on every line logged while it is (None outside requests).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# A client's X-Request-ID is kept when it is 1-128 of these characters; any other is replaced.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")

CAPACITY = 10_000  # lines waiting to be written at most; past it lines are dropped and counted
BATCH_SECONDS = 0.005  # lines gather this long before they are written, so one write carries many
FLUSH_SECONDS = 5.0  # the longest a flush waits for stderr (at exit, and for each line during shutdown)
TRACEBACK_BURST, TRACEBACKS_PER_SECOND = 10, 1.0  # then only a count of the tracebacks left out...
SUPPRESSED_EVERY = 10.0  # ...written every this many seconds while there are any

_encode_lines = msgspec.json.Encoder().encode_lines
_encode = msgspec.json.Encoder().encode
_now = datetime.now


def _request_ids() -> None:
    global new_request_id, _id_prefix
    # A random prefix per process and a counter: "3f9a0c1be27d-41". next() over maps, with no
    # Python frame per id (a function formatting the id cost 5k instructions a request).
    _id_prefix = f"{secrets.token_hex(6)}-"
    ids = map(_id_prefix.__add__, map(str, itertools.count(1)))
    new_request_id = functools.partial(next, ids)


new_request_id: Callable[[], str]  # a new request id, unique across processes
_id_prefix: str
_request_ids()
os.register_at_fork(after_in_child=_request_ids)  # a forked worker must not repeat its parent's ids


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


class JSONFormatter(logging.Formatter):
    """time, level, logger and message, the request id, the fields of a dict message, and the traceback if any."""

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
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


class LogWriter:
    """Lines queued by any thread and written to stderr a batch at a time, never on a request's time.

    Lines made on an event loop (`add_soon`: access lines, and every record logged there) gather for
    BATCH_SECONDS; then the loop writes the batch itself in one call (msgspec encodes it, one system
    call a few thousand bytes), but only while stderr takes it without waiting. Everything else goes
    to a thread of the writer's own (`add`): lines from other threads or from no loop, and a batch
    that stderr would make the loop wait for, or that would pass lines still queued for the thread.

    Handing every line to the thread instead cost 0.4 context switches a request, waking it and
    trading the GIL with it, and some Python per line; the loop's batch costs neither. What an
    access line costs, measured, is in the README.

    At most `capacity` lines wait, in each queue; past that they are dropped, and a line says how
    many once stderr takes lines again. Records with a traceback go through `tracebacks`, which lets
    a storm of them through as a count.
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.stream = None  # None: sys.stderr at the time of writing (which pytest's capture swaps)
        # Every write waits for stderr (uvicorn re-raises SIGTERM after its shutdown, and a signal's
        # death runs no atexit: lines still queued then would be lost). Set at the app's shutdown.
        self.write_through = False
        self._formatter = JSONFormatter()
        # Lines to bytes: JSON, one object a line (msgspec, one call a batch); Console.render for a person.
        self.render: Callable[[list], bytes] = _encode_lines
        self._reset()

    def _reset(self) -> None:
        self.tracebacks = TracebackLimit()
        self._pending: collections.deque = collections.deque()  # the thread's
        self._batch: list = []  # the event loop's
        self._batch_plain = True  # the batch holds AccessLines alone: msgspec encodes it in one call
        self._batch_loop: asyncio.AbstractEventLoop | None = None  # the loop that will write the batch
        self._writing = threading.Lock()  # held by whoever writes: one writer at a time, lines in order
        self._sleeping = True  # the thread waits for the bell (or has not started): ring it on the next line
        # A bare lock as the bell: the thread blocks acquiring it, a line releases it. 20 times cheaper
        # than Event.set(), whose Condition is Python code.
        self._bell = threading.Lock()
        self._bell.acquire()
        self._thread: threading.Thread | None = None
        self._hurry = False  # a flush waits: write without gathering first
        self._dropped = self._reported_dropped = 0

    def add(self, item: Any) -> None:
        """Queue a line or a LogRecord for the thread; drop it, counted, when `capacity` lines already wait."""
        pending = self._pending
        if len(pending) >= self.capacity:
            self._dropped += 1
            return
        pending.append(item)
        if self._sleeping:
            self._wake_up()

    def add_soon(self, item: Any) -> None:
        """Queue an AccessLine or a LogRecord made on the running event loop, which writes it with its
        batch within BATCH_SECONDS; drop it, counted, when `capacity` lines already wait."""
        if self.write_through:  # shutting down: the loop may stop before the batch is due
            self.add(item)
            self.flush()
            return
        batch = self._batch
        if len(batch) >= self.capacity:
            self._dropped += 1
            return
        batch.append(item)
        if type(item) is AccessLine:
            # The loop is asked only for a batch's first line: on Python 3.11 asking is a getpid()
            # system call. A record asks every time (below); an access line after a loop that
            # closed with a batch pending waits for the next record or flush (the app's shutdown,
            # each test) instead of having a batch of its own.
            if len(batch) == 1:
                self._arm(asyncio.get_running_loop())
        else:
            self._batch_plain = False
            # Compared, not only set: a loop that closed with the batch's timer pending never ran it.
            loop = asyncio.get_running_loop()
            if self._batch_loop is not loop:
                self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._batch_loop = loop
        loop.call_later(BATCH_SECONDS, self._write_batch)

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until every line queued so far is written; False if that took over `timeout` seconds."""
        self._to_thread(self._take_batch())
        written = threading.Event()
        self._pending.append(written)  # over capacity or not: it is no line
        self._hurry = True
        self._wake_up()
        return written.wait(timeout)

    def _take_batch(self) -> list:
        items, self._batch = self._batch, []
        self._batch_loop = None
        self._batch_plain = True
        return items

    def _write_batch(self) -> None:
        # On the event loop, BATCH_SECONDS after the batch's first line.
        plain = self._batch_plain
        items = self._take_batch()
        if not items:  # taken by a flush meanwhile
            return
        if self._pending or not self._writing.acquire(blocking=False):
            self._to_thread(items)  # the thread has lines queued before these, or is writing them
            return
        try:
            rest = self._write(items, wait=False, plain=plain)
        finally:
            self._writing.release()
        if rest:
            self.add(rest)  # stderr was full: what it did not take waits in the thread's queue

    def _to_thread(self, items: list) -> None:
        kept = items[: max(0, self.capacity - len(self._pending))]
        self._dropped += len(items) - len(kept)
        if kept:
            self._pending.extend(kept)
            self._wake_up()

    def _wake_up(self) -> None:
        self._sleeping = False
        try:  # noqa: SIM105 (contextlib.suppress is a Python context manager: a microsecond a wake-up)
            self._bell.release()
        except RuntimeError:  # rung already
            pass
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="log writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        pending = self._pending
        while True:
            self._sleeping = True
            if not pending:
                self._bell.acquire(timeout=SUPPRESSED_EVERY if self.tracebacks.left_out else -1)
            self._sleeping = False
            if not self._hurry:  # let lines gather: one write of many, not a wake-up and a write per line
                time.sleep(BATCH_SECONDS)
            self._hurry = False
            with self._writing:
                self._write([pending.popleft() for _ in range(len(pending))])

    def _write(self, items: list, wait: bool = True, plain: bool = False) -> bytes:
        """Write the lines among `items` (AccessLines alone if `plain`) and set its flush events.
        Unless `wait`, write only what stderr takes without waiting, and give back the rest."""
        lines: list = []
        flushed = []
        raw = b""  # what stderr did not take of an earlier batch, already encoded
        dropped = self._dropped - self._reported_dropped
        if dropped:
            self._reported_dropped += dropped
            message = f"dropped {dropped} log lines: stderr took them slower than they came"
            lines.append(self._note(message, dropped=dropped))
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
            elif not (item.exc_info or item.exc_text) or self.tracebacks.allow(item):
                lines.append(self._fields(item))
        if self.tracebacks.note_due():
            count, exceptions, seconds = self.tracebacks.take_count()
            message = (
                f"left out {count} records with tracebacks in {seconds:.0f} s: at most "
                f"{self.tracebacks.burst} at once, then {self.tracebacks.per_second:g} a second"
            )
            lines.append(self._note(message, suppressed=count, exceptions=exceptions))
        rest = b""
        if lines or raw:
            data = raw + self.render(lines)
            try:
                rest = self._send(data, wait)
            except (OSError, ValueError):  # stderr closed or gone: nothing left to tell
                self._dropped += data.count(b"\n")
        for event in flushed:
            event.set()
        return rest

    def _fields(self, record: logging.LogRecord) -> dict[str, Any]:
        try:
            return self._formatter.fields(record)
        except Exception as exc:  # a record that cannot be formatted costs itself alone, not its batch
            return self._note(f"a {record.levelname} record of {record.name} could not be formatted: {exc!r}")

    def _send(self, data: bytes, wait: bool) -> bytes:
        stream = self.stream or sys.stderr
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # pytest's capture, a BytesIO: no file descriptor
            getattr(stream, "buffer", stream).write(data)
            stream.flush()
            return b""
        if not wait:
            ready = select.poll()
            ready.register(fd, select.POLLOUT)
        # Whole lines, at most PIPE_BUF bytes a write: a pipe takes such a write whole, so the lines of
        # several processes on one stderr (uvicorn --workers) never cut into each other; and a write of
        # PIPE_BUF bytes at most to a pipe that polls writable does not wait.
        view, start = memoryview(data), 0
        while start < len(data):
            if not wait and not ready.poll(0):
                return data[start:]
            end = data.rfind(b"\n", start, start + select.PIPE_BUF) + 1
            if end <= start:  # one line longer than PIPE_BUF (a long traceback): on its own
                end = data.find(b"\n", start) + 1 or len(data)
            while start < end:
                start += os.write(fd, view[start:end])
        return b""

    def _note(self, message: str, **fields: Any) -> dict[str, Any]:
        # A line of the writer's own, about the lines it could not write.
        return {"time": _now(UTC), "level": "WARNING", "logger": log.name, "message": message, **fields}


class TracebackLimit:
    """A token bucket for records with a traceback: `burst` at once, then `per_second`; the records
    beyond are counted by exception type, for a line every SUPPRESSED_EVERY seconds."""

    def __init__(self, burst: int = TRACEBACK_BURST, per_second: float = TRACEBACKS_PER_SECOND) -> None:
        self.burst, self.per_second = burst, per_second
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
        return bool(self.left_out) and time.monotonic() - self._since >= SUPPRESSED_EVERY

    def take_count(self) -> tuple[int, dict[str, int], float]:
        """How many were left out, by exception type, over how many seconds; counting starts again."""
        count, exceptions = sum(self.left_out.values()), dict(self.left_out)
        self.left_out.clear()
        return count, exceptions, time.monotonic() - self._since


class JSONHandler(logging.Handler):
    """Hands each record to the writer, with the request id and the message taken now, in the
    caller's context; the writer formats it (on the loop's batch or on its thread)."""

    def __init__(self, writer: LogWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        record.request_id = REQUEST_ID.get()
        if not isinstance(record.msg, dict):
            # As QueueHandler does: the arguments may change before the writer gets to them.
            try:
                record.msg, record.args = record.getMessage(), None
            except Exception as exc:  # `log.info("%d", "x")`: say so rather than print a traceback as text
                record.msg, record.args = f"unformattable log message {record.msg!r}: {exc!r}", None
        # Made on an event loop: in that loop's batch, after the lines of its requests made before it.
        if asyncio._get_running_loop() is not None and not self.writer.write_through:
            self.writer.add_soon(record)
            return
        self.writer.add(record)
        if self.writer.write_through and not self.writer.flush():
            self.writer.write_through = False  # stderr is stuck: waiting for each line would only hang shutdown

    def flush(self) -> None:
        # logging.shutdown() calls this at exit: what is queued gets written.
        self.writer.flush()


writer = LogWriter()
# A forked child has no writer thread, and its parent writes what was queued before the fork.
os.register_at_fork(after_in_child=writer._reset)


def write_through(app: Any = None) -> None:
    """From now on each record waits until it is written: for the app's shutdown (a shutdown hook)."""
    writer.flush()
    writer.write_through = True


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
        return f"{self._start(line.time, line.level)}{request} {self._paint(_short(line.request_id), '2')}"

    def _record(self, fields: dict[str, Any]) -> str:
        fields = dict(fields)
        when, level, logger = fields.pop("time"), fields.pop("level"), fields.pop("logger")
        message, request_id = fields.pop("message", ""), fields.pop("request_id", None)
        exception = fields.pop("exception", None)
        extra = "".join(f" {key}={value}" for key, value in fields.items())
        tail = f"({logger}){f' {_short(request_id)}' if request_id else ''}"
        line = f"{self._start(when, level)}{message}{extra} {self._paint(tail, '2')}"
        if exception:
            line += "\n" + self._paint(exception.rstrip("\n"), self.LEVELS["ERROR"])
        return line


def _short(request_id: str | None) -> str:
    if request_id is None:
        return ""
    if request_id.startswith(_id_prefix):
        return f"#{request_id[len(_id_prefix) :]}"
    return f"#{request_id}" if len(request_id) <= 16 else f"#{request_id[:15]}…"


FORMATS = ("json", "console")


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


def configure(level: str, log_format: str | None = None) -> None:
    """Send every record to stderr through the writer: this package's, uvicorn's (which configured
    its own before importing the app) and any library's such as asyncpg's, at `level`; one JSON
    object a line, or a line for a person with `log_format` "console" (default: chosen_format()).
    uvicorn's own access line is turned off: the app writes one per request."""
    log_format = log_format or chosen_format()
    if log_format == "console":
        # Colour for a terminal, unless NO_COLOR asks for none (https://no-color.org).
        colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        writer.render = Console(colour).render
    else:
        writer.render = _encode_lines
    root = logging.getLogger()
    if not any(isinstance(handler, JSONHandler) for handler in root.handlers):
        root.addHandler(JSONHandler(writer))
    root.setLevel(level)
    logging.getLogger(__package__).setLevel(level)
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
