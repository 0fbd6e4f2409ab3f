"""Bytes to stderr in whole lines, so that the lines of several processes sharing it never cut into each other."""

import os
import select

# A poll object per file descriptor written without waiting, made once: making and registering one for
# every batch was a third of a batch's write (bench/results/profile.md). Only the event loop polls, one
# batch at a time (the writer's lock), so no two threads poll one of them at once.
_polls: dict[int, select.poll] = {}


def write_lines(stream, data: bytes, wait: bool) -> bytes:
    """Write `data`, whole lines, to `stream`. Unless `wait`, write only what it takes without waiting,
    and give back the rest."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # pytest's capture, a BytesIO: no file descriptor
        getattr(stream, "buffer", stream).write(data)
        stream.flush()
        return b""
    if not wait:
        ready = _polls.get(fd)
        if ready is None:
            ready = _polls[fd] = select.poll()
            ready.register(fd, select.POLLOUT)
    # Whole lines, at most PIPE_BUF bytes a write: a pipe takes such a write whole, so the lines of
    # several processes on one stderr (uvicorn --workers) never cut into each other; and a write of
    # PIPE_BUF bytes at most to a pipe that polls writable does not wait.
    start = 0
    if len(data) <= select.PIPE_BUF:  # the usual batch: one write
        if not wait and not ready.poll(0):
            return data
        start = os.write(fd, data)
        if start == len(data):
            return b""
    view = memoryview(data)
    while start < len(data):
        if not wait and not ready.poll(0):
            return data[start:]
        end = data.rfind(b"\n", start, start + select.PIPE_BUF) + 1
        if end <= start:  # one line longer than PIPE_BUF (a long traceback): on its own
            end = data.find(b"\n", start) + 1 or len(data)
        while start < end:
            start += os.write(fd, view[start:end])
    return b""
