"""Request ids: the one of the request being answered, a client's kept when sane, new ones unique across processes."""

import functools
import itertools
import os
import re
import secrets
from collections.abc import Callable
from contextvars import ContextVar

# The id of the request being answered, on every line logged while it is (None outside requests).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# A client's X-Request-ID is kept when it is 1-128 of these characters; any other is replaced.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")

# Both replaced in a forked process: read them as `ids.new_request_id`, `ids.prefix`, never imported by name.
new_request_id: Callable[[], str]  # a new request id, unique across processes
prefix: str  # this process's, on each id it makes


def _start() -> None:
    global new_request_id, prefix
    # A random prefix per process and a counter: "3f9a0c1be27d-41". next() over maps, with no
    # Python frame per id (a function formatting the id cost 5k instructions a request).
    prefix = f"{secrets.token_hex(6)}-"
    made = map(prefix.__add__, map(str, itertools.count(1)))
    new_request_id = functools.partial(next, made)


_start()
os.register_at_fork(after_in_child=_start)  # a forked worker must not repeat its parent's ids


def short(request_id: str | None) -> str:
    """A request id as a person reads it: `#41` for this process's own (without its prefix), a client's as
    sent, cut to 16 characters."""
    if request_id is None:
        return ""
    if request_id.startswith(prefix):
        return f"#{request_id[len(prefix) :]}"
    return f"#{request_id}" if len(request_id) <= 16 else f"#{request_id[:15]}…"
