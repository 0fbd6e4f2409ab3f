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

from .logs import log_request

log = logging.getLogger(__name__)
T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
_JSON = ("Content-Type", "application/json")
# A body read as JSON must say it is JSON: browsers send text/plain, form and multipart bodies to any
# site without asking it first (no CORS preflight), so reading those as JSON would let any web page
# post here on its visitors' behalf. `+json` types (application/merge-patch+json...) are JSON too.
# ASCII only: with Unicode case folding, "json" spelt with U+017F (a long s) would pass.
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[-!#$%&'*+.^_`|~0-9a-z]+\+)?json", re.ASCII | re.IGNORECASE)


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
    """Decode the request body with a msgspec decoder: 415 when it is not sent as JSON (Content-Type
    `application/json` or `application/<x>+json`), 400 when it is not JSON, 422 when it is the wrong shape."""
    media_type = req.headers.get("content-type")  # a str, or a list when the header is repeated
    if media_type != "application/json" and not (
        isinstance(media_type, str) and _JSON_MEDIA_TYPE.fullmatch(media_type.partition(";")[0].strip(" \t"))
    ):
        raise HTTPError(415, "unsupported_media_type", "send the body as JSON, with Content-Type: application/json")
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
    - 404, 405 and 413 answered by Heaven's router are JSON as well, and so is the 400 of a header
      that is not UTF-8, which Heaven cannot read.
    - With `access_log`, each request a handler answers is logged as one JSON line (logs.py).
    - `provide(key, value)` puts a value on every request's context, as a `BEFORE('/*')` hook
      would, at a fraction of a hook's cost.
    """

    def __init__(self, *, debug: bool = False, max_body_size: int | None = None, access_log: bool = True) -> None:
        super().__init__(debug=debug, max_body_size=max_body_size)
        # Kept here rather than read back from Heaven's private attributes (_debug, _max_body_size).
        self._show_tracebacks, self._access_log = debug, access_log
        # Heaven routes a request with no subdomain through this engine (tests/test_heaven.py checks it).
        self.subdomains[DEFAULT] = _JSONRoutes(max_body_size)

    def provide(self, key: str, value: Any) -> None:
        """Keep `value` on every request's context as `key` (`ctx.peek(key)`, `ctx.<key>`), in
        place before any BEFORE hook runs, so hooks can use it as well as handlers."""
        self.subdomains[DEFAULT].provided[key] = value

    def abettor(self, method, route, handler, *args, **kwargs):
        if inspect.iscoroutinefunction(handler):
            handler = _answering_errors(handler, self._show_tracebacks, route if self._access_log else None)
        return super().abettor(method, route, handler, *args, **kwargs)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        try:
            return await super().__call__(scope, receive, send)
        except UnicodeDecodeError:
            # Heaven decodes every header as UTF-8 before it routes; HTTP lets a header carry other
            # bytes, and one such header would be a 500 for the client and a traceback in the log.
            if scope["type"] != "http" or not _undecodable_header(scope):
                raise
        error = {"error": "malformed_header", "detail": "a header is not UTF-8"}
        await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": _encode(error)})

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


def _undecodable_header(scope) -> bool:
    try:
        for name, value in scope["headers"]:
            name.decode(), value.decode()
    except UnicodeDecodeError:
        return True
    return False


async def _run_all(hooks, app) -> None:
    # Heaven stores startup and shutdown hooks in deques, wrapped to take the app.
    while hooks:
        await hooks.popleft()(app)


def _answering_errors(handler, debug: bool, logged_route: str | None):
    @functools.wraps(handler)
    async def answering_errors(req, res, ctx):
        started = perf_counter()
        try:
            await handler(req, res, ctx)
        except HTTPError as exc:
            send(res, exc.body(), exc.status)
        except Exception as exc:
            log.exception("unhandled error in %s %s", req.method, req.url)
            error = {"error": "internal_error", "detail": "the server failed to answer this request"}
            if debug:
                error["traceback"] = traceback.format_exception(exc)
            send(res, error, 500)
        if logged_route is not None:
            log_request(req, res, logged_route, started)

    return answering_errors


class _JSONRoutes(Routes):
    """Heaven's route table, with its own 404, 405 and 413 answers turned into JSON, and the
    values of App.provide put on each request's context."""

    def __init__(self, max_body_size: int | None) -> None:
        super().__init__()
        self.provided: dict[str, Any] = {}
        self.max_body_size = max_body_size

    async def xhooks(self, hookstore, methodstore, matched, r, w, c, before=False):
        # Heaven runs this twice a request, BEFORE hooks and AFTER hooks, and spells out every
        # wildcard pattern of the route before it looks one up: 1 µs each time, hooks or not.
        # Provided values instead of a BEFORE('/*') hook leave it nothing to do in most apps. Heaven's
        # public way, the plugin's hook and no override here, costs 6-8 % more instructions a request.
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
        send(w, {"error": "payload_too_large", "detail": f"the body is over {self.max_body_size} bytes"}, 413)
        return False
