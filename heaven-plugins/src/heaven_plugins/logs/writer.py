"""The log writer: lines queued by any thread, written to stderr a batch at a time, never on a request's time."""

import asyncio
import collections
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .ids import REQUEST_ID
from .lines import AccessLine, encode_lines, lines_of
from .stderr import write_lines
from .tracebacks import TracebackLimit

CAPACITY = 10_000  # lines waiting to be written at most; past it lines are dropped and counted
BATCH_SECONDS = 0.005  # lines gather this long before they are written, so one write carries many
FLUSH_SECONDS = 5.0  # the longest a flush waits for stderr (at exit, and for each line during shutdown)


class LogWriter:
    """Lines queued by any thread and written to stderr a batch at a time, never on a request's time.

    Lines made on an event loop (`add_soon`: access lines, and every record logged there) gather for
    BATCH_SECONDS; then the loop writes the batch itself in one call (msgspec encodes it, one system
    call a few thousand bytes), but only while stderr takes it without waiting. Everything else goes
    to a thread of the writer's own (`add`): lines from other threads or from no loop, and a batch
    that stderr would make the loop wait for, or that would pass lines still queued for the thread.

    Handing every line to the thread instead cost 0.4 context switches a request, waking it and
    trading the GIL with it, and some Python per line; the loop's batch costs neither. What an
    access line costs is measured by heaven-pg's benchmark (its bench/README.md).

    At most `capacity` lines wait, in each queue; past that they are dropped, and a line says how
    many once stderr takes lines again. Records with a traceback go through `tracebacks`, which lets
    a storm of them through as a count. What a batch says is lines.py's; how it reaches stderr, stderr.py's.
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.stream = None  # None: sys.stderr at the time of writing (which pytest's capture swaps)
        # Every write waits for stderr (uvicorn re-raises SIGTERM after its shutdown, and a signal's
        # death runs no atexit: lines still queued then would be lost). Set at the app's shutdown.
        self.write_through = False
        # Lines to bytes: JSON, one object a line (msgspec, one call a batch); Console.render for a person.
        self.render: Callable[[list], bytes] = encode_lines
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
                self._bell.acquire(timeout=self.tracebacks.every if self.tracebacks.left_out else -1)
            self._sleeping = False
            if not self._hurry:  # let lines gather: one write of many, not a wake-up and a write per line
                time.sleep(BATCH_SECONDS)
            self._hurry = False
            with self._writing:
                self._write([pending.popleft() for _ in range(len(pending))])

    def _write(self, items: list, wait: bool = True, plain: bool = False) -> bytes:
        """Write the lines among `items` (AccessLines alone if `plain`) and set its flush events.
        Unless `wait`, write only what stderr takes without waiting, and give back the rest."""
        dropped = self._dropped - self._reported_dropped
        if plain and not dropped and not self.tracebacks.left_out:  # the usual batch: access lines alone, as they are
            lines, raw, flushed = items, b"", ()
        else:
            self._reported_dropped += dropped
            lines, raw, flushed = lines_of(items, plain, dropped, self.tracebacks)
        rest = b""
        if lines or raw:
            data = raw + self.render(lines)
            try:
                rest = write_lines(self.stream or sys.stderr, data, wait)
            except (OSError, ValueError):  # stderr closed or gone: nothing left to tell
                self._dropped += data.count(b"\n")
        for event in flushed:
            event.set()
        return rest


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
