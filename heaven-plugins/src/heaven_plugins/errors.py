"""What escapes a handler or a hook, answered as JSON: an HTTPError as it says, a type registered with
App.answer as its answer says, anything else as a 500 logged with its traceback."""

import functools
import inspect
import logging
import traceback
from collections.abc import Callable
from typing import Any

from .web import HTTPError, send

# Named as before the App's error answering had a module of its own: log queries keep working.
log = logging.getLogger("heaven_plugins.app")

Answers = dict[type[BaseException], Callable[[Any], HTTPError]]


def answering_errors(handler, check, debug: bool, answers: Answers):
    """`handler`, with `check(req, ctx)` run first when there is one, its failures answered (answer_error)."""
    asynchronous = inspect.iscoroutinefunction(handler)

    @functools.wraps(handler)
    async def answering(req, res, ctx):
        try:
            if check is not None:
                check(req, ctx)
            if asynchronous:
                await handler(req, res, ctx)
            else:
                handler(req, res, ctx)
        except Exception as exc:
            answer_error(res, exc, answers, req.method, req.url, debug)

    return answering


def answer_error(res, exc: BaseException, answers: Answers, method: str, path: str, debug: bool) -> None:
    """Answer `exc`: an HTTPError as it is, else the answer registered for the closest of its types, else a
    500, logged with its traceback, which the client sees only in debug."""
    error = exc if isinstance(exc, HTTPError) else _answered(exc, answers) if answers else None
    if error is None:
        _internal_error(res, exc, method, path, debug)
        return
    send(res, error.body(), error.status)
    for header in error.headers:
        res.headers = header


def _answered(exc: BaseException, answers: Answers) -> HTTPError | None:
    for kind in type(exc).__mro__:
        to_error = answers.get(kind)
        if to_error is not None:
            return to_error(exc)
    return None


def _internal_error(res, exc: BaseException, method: str, path: str, debug: bool) -> None:
    log.error("unhandled error in %s %s", method, path, exc_info=exc)
    error = {"error": "internal_error", "detail": "the server failed to answer this request"}
    if debug:
        error["traceback"] = traceback.format_exception(exc)
    send(res, error, 500)
