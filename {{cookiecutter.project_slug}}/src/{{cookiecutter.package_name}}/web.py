"""The HTTP edge: the App (a Heaven Router that fails loudly), JSON responses and errors."""

import asyncio
import functools
import inspect
import logging
import re
import traceback
from collections.abc import Callable
from time import perf_counter
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
from heaven import Router
from heaven.constants import DEFAULT
from heaven.router import Routes

from . import logs
from .logs import REQUEST_ID, SANE_REQUEST_ID, log_request, write_through

log = logging.getLogger(__name__)
T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
_JSON = ("Content-Type", "application/json")


class HTTPError(Exception):
    """Raise from a handler to answer `{"error": code, "detail": ..., "field": ...}` with `status`."""

    def __init__(self, status: int, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.field = status, code, detail, field

    def body(self) -> dict[str, Any]:
        error = {"error": self.code, "detail": self.detail}
        if self.field:
            error["field"] = self.field
        return error


def send(res, body: Any, status: int = 200) -> None:
    """Answer with `body` encoded by msgspec (Structs, lists, dicts, datetimes...) as JSON."""
    res.status = status
    res.headers = _JSON
    res.body = _encode(body)


def read(req, decode: Callable[[bytes], T]) -> T:
    """Decode the request body with a msgspec decoder: 400 when it is not JSON, 422 when it is the wrong shape."""
    try:
        return decode(req.body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: keep it first
        raise _invalid(exc) from None
    except msgspec.DecodeError as exc:
        raise HTTPError(400, "malformed_json", str(exc)) from None
    except UnicodeDecodeError as exc:  # msgspec raises this, not DecodeError, for a string that is not UTF-8
        raise HTTPError(400, "malformed_json", f"JSON is malformed: {exc.reason} (byte {exc.start})") from None


def read_query(req, struct: type[T]) -> T:
    """The query string as a `struct` (values read as its fields' types, bounds checked): 422 naming the field."""
    # Not Heaven's req.queries, which keeps a value its hint cannot read as a string, silently.
    raw = req.querystring.decode("latin-1")
    if "%" in raw or "+" in raw:
        query = dict(parse_qsl(raw))
    else:  # the usual `limit=20&after=40`, split three times faster than parse_qsl does it
        query = {key: value for key, _, value in (pair.partition("=") for pair in raw.split("&")) if key}
    try:
        return msgspec.convert(query, struct, strict=False)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: msgspec.ValidationError) -> HTTPError:
    message = str(exc)
    return HTTPError(422, "invalid", message, _field(message))


def _field(message: str) -> str | None:
    # msgspec ends a message with "- at `$.email`" or names the field: "missing required field `email`".
    match = re.search(r"at `\$\.([^`\[]+)|field `([^`]+)`", message)
    return (match.group(1) or match.group(2)) if match else None


class App(Router):
    """A Heaven Router whose startup can fail and whose every answer, error or not, is JSON.

    - A failing startup hook fails the ASGI lifespan, so uvicorn exits instead of serving without
      a database (Heaven itself logs the failure and reports success). Daemons start after it.
    - An exception escaping a handler becomes a JSON error: its own status for an HTTPError, 500
      for anything else, logged with its traceback and sent to the client only in debug.
    - 404, 405 and 413 answered by Heaven's router are JSON as well.
    - Every response carries an `X-Request-ID`: the client's when it is sane, else a new one; it is
      on every log line about the request (logs.py).
    - `observe(fn)` calls `fn(scope, res, route, seconds)` once each request is answered; with
      `access_log`, the first observer writes its access line (logs.py). `in_flight` counts the
      requests being answered.
    - `provide(key, value)` puts a value on every request's context, as a `BEFORE('/*')` hook
      would, at a fraction of a hook's cost.
    """

    def __init__(self, *, debug: bool = False, max_body_size: int | None = None, access_log: bool = True) -> None:
        super().__init__(debug=debug, max_body_size=max_body_size)
        self.subdomains[DEFAULT] = _JSONRoutes(debug)
        if access_log:
            self.observe(log_request)
        # The first shutdown hook: the lines of the shutdown are written before uvicorn ends the process.
        self.ON("shutdown", write_through)

    def observe(self, observer: Callable[[dict, Any, str | None, float], None]) -> None:
        """Call `observer(scope, res, route, seconds)` after each request is answered (route is None
        when none matched); it runs on every request, so it should only count or queue."""
        self.subdomains[DEFAULT].observers.append(observer)

    @property
    def in_flight(self) -> int:
        """Requests being answered right now."""
        return self.subdomains[DEFAULT].in_flight

    def provide(self, key: str, value: Any) -> None:
        """Keep `value` on every request's context as `key` (`ctx.peek(key)`, `ctx.<key>`), in
        place before any BEFORE hook runs, so hooks can use it as well as handlers."""
        self.subdomains[DEFAULT].provided[key] = value

    def abettor(self, method, route, handler, *args, **kwargs):
        if inspect.iscoroutinefunction(handler):
            handler = _answering_errors(handler, self._debug)
        return super().abettor(method, route, handler, *args, **kwargs)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        return await super().__call__(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        await receive()  # lifespan.startup
        try:
            await _run_all(self.initializers, self)
        except Exception as exc:
            # The server logs the message (uvicorn, then exits with status 3); logging it here too would say it twice.
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        # Heaven's background functions (`app.daemons = fn`), started once the app is up, as Heaven does.
        self._daemon_tasks = [asyncio.create_task(daemon(self)) for daemon in self.daemons]
        await receive()  # lifespan.shutdown
        try:
            await _run_all(self.deinitializers, self)
        except Exception:
            log.exception("shutdown failed")
        await send({"type": "lifespan.shutdown.complete"})


async def _run_all(hooks, app) -> None:
    # Heaven stores startup and shutdown hooks in deques, wrapped to take the app.
    while hooks:
        await hooks.popleft()(app)


def _answering_errors(handler, debug: bool):
    @functools.wraps(handler)
    async def answering_errors(req, res, ctx):
        try:
            await handler(req, res, ctx)
        except HTTPError as exc:
            send(res, exc.body(), exc.status)
        except Exception as exc:
            _internal_error(res, exc, req.method, req.url, debug)

    return answering_errors


def _internal_error(res, exc: Exception, method: str, path: str, debug: bool) -> None:
    log.error("unhandled error in %s %s", method, path, exc_info=exc)
    error = {"error": "internal_error", "detail": "the server failed to answer this request"}
    if debug:
        error["traceback"] = traceback.format_exception(exc)
    send(res, error, 500)


class _JSONRoutes(Routes):
    """Heaven's route table, with its own 404, 405 and 413 answers turned into JSON, the values of
    App.provide put on each request's context, and each answer given its request id and observed."""

    def __init__(self, debug: bool = False) -> None:
        super().__init__()
        self.provided: dict[str, Any] = {}
        self.observers: list[Callable] = []
        self.in_flight = 0
        self._debug = debug

    async def handle(self, scope, receive, asgi_send, metadata=None, application=None):
        # Every request passes here, whatever answers it: a handler, a hook, or Heaven's 404/405/413.
        request_id = metadata[1].get("x-request-id")  # Heaven's decoded headers; a list when repeated
        if type(request_id) is not str or not SANE_REQUEST_ID.fullmatch(request_id):
            request_id = logs.new_request_id()  # looked up each time: a forked process gets its own
        # The request's own task runs this: the id stays with this request, on every record made for it.
        REQUEST_ID.set(request_id)
        started = perf_counter()
        self.in_flight += 1
        try:
            res = await super().handle(scope, receive, asgi_send, metadata, application)
        finally:
            self.in_flight -= 1
        # Not res.__dict__.pop(): on 3.11 asking for an instance's __dict__ builds it, 2k instructions.
        error = getattr(res, "_unhandled_error", None)
        if error is not None:  # raised by a hook: answered here, as JSON, not printed by Heaven as text
            del res._unhandled_error
            if isinstance(error, HTTPError):
                send(res, error.body(), error.status)
            else:
                _internal_error(res, error, scope.get("method", ""), scope["path"], self._debug)
        # Appended, not res.headers = (...): Heaven's setter rebuilds the list, 1 µs a request.
        res.headers.append((b"x-request-id", request_id.encode()))
        if self.observers and scope["type"] == "http":  # a websocket has no method, no status
            seconds = perf_counter() - started
            route = res._req._route  # Heaven keeps the matched route on the request; None if none matched
            for observer in self.observers:
                observer(scope, res, route, seconds)
        return res

    async def xhooks(self, hookstore, methodstore, matched, r, w, c, before=False):
        # Heaven runs this twice a request, BEFORE hooks and AFTER hooks, and spells out every
        # wildcard pattern of the route before it looks one up: 1 µs each time, hooks or not.
        # Provided values instead of a BEFORE('/*') hook leave it nothing to do in most apps.
        if before:
            for key, value in self.provided.items():
                c.keep(key, value)
        if hookstore:
            await super().xhooks(hookstore, methodstore, matched, r, w, c, before)

    def unmatched(self, scope, method, route, w):
        w = super().unmatched(scope, method, route, w)
        if scope["type"] == "http":
            if w.status == 405:
                send(w, {"error": "method_not_allowed", "detail": f"{method} is not allowed on {route}"}, 405)
            else:
                send(w, {"error": "not_found", "detail": f"nothing at {route}"}, 404)
        return w

    async def buffer(self, r, receive, w, application):
        if await super().buffer(r, receive, w, application):
            return True
        limit = application._max_body_size
        send(w, {"error": "payload_too_large", "detail": f"the body is over {limit} bytes"}, 413)
        return False
