"""The App: a Heaven Router whose startup can fail, whose every answer is JSON, with a request id on each."""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import orjson
from heaven import Router
from heaven.constants import DEFAULT, HEAD, SOCKET
from heaven.router import _string_to_function_handler

from .errors import Answers, answering_errors
from .logs import ids
from .logs.access_log import access, log_request
from .logs.writer import write_through, writer
from .routes import JSONRoutes
from .web import HTTPError

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode


class App(Router):
    """A Heaven Router whose startup can fail and whose every answer, error or not, is JSON.

    - A failing startup hook fails the ASGI lifespan, so uvicorn exits instead of serving without
      a database (Heaven itself logs the failure and reports success). Daemons start after it.
    - An exception escaping a handler becomes a JSON error: its own status for an HTTPError, 500
      for anything else, logged with its traceback and sent to the client only in debug.
    - 404, 405 and 413 answered by Heaven's router are JSON as well, and so is the 400 of a header
      that is not UTF-8, which Heaven cannot read. OPTIONS on a route is a 204 whose `Allow` lists
      its methods.
    - Every response carries an `X-Request-ID`: the client's when it is sane, else a new one; it is
      on every log line about the request (logs).
    - `observe(fn)` calls `fn(scope, res, route, seconds)` once each request is answered; with
      `access_log`, the first observer writes its access line (logs.access_log). `in_flight` counts the
      requests being answered.
    - `provide(key, value)` puts a value on every request's context, as a `BEFORE('/*')` hook
      would, at a fraction of a hook's cost.
    - `answer(kind, to_error)` says how an exception type a plugin raises is answered (an HTTPError).
    - `guard(rule)` runs a check before every handler registered after it (sign-in's).
    - `wrap(layer)` puts an ASGI layer around every HTTP request, before routing (CORS's).
    - Shutdown hooks run last registered first: a plugin installed after another, and perhaps
      using it (sign-in reads through Postgres), stops before it.
    """

    def __init__(self, *, debug: bool = False, max_body_size: int | None = None, access_log: bool = True) -> None:
        super().__init__(debug=debug, max_body_size=max_body_size)
        # Kept here rather than read back from Heaven's private attributes (_debug, _max_body_size).
        self._show_tracebacks = debug
        self._rule: Callable[[Callable], Callable | None] | None = None
        # Exception type -> how it is answered (answer()); read at each failure, so routes registered
        # before a plugin registers its answers get them too.
        self._answers: Answers = {}
        self._serve = self._route
        # Heaven routes a request with no subdomain through this engine (tests/test_heaven.py checks it).
        self.subdomains[DEFAULT] = self._routes = JSONRoutes(debug, max_body_size)
        self.subdomains[DEFAULT].answers = self._answers  # one map: what a hook raises is answered alike
        if access_log and access.isEnabledFor(logging.INFO):  # asked once, not on each request
            self.observe(log_request)
        # The last shutdown hook to run (they run last registered first): the lines of the shutdown
        # are written before uvicorn ends the process.
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

    def guard(self, rule: Callable[[Callable], Callable[[Any, Any], None] | None]) -> None:
        """From now on, each handler registered gets `rule(handler)`: None, or a check
        `check(req, ctx)` run before the handler on each request, whose HTTPError is the answer.

        The rule is asked once per route, when it is registered: what a request pays is the
        check alone. A route registered before the guard would escape it, so that is refused,
        as is a websocket route the rule would check (its handler runs outside the check).
        """
        if self._rule is not None:
            raise RuntimeError("the app has a guard already")
        if any(self.subdomains[DEFAULT].cache.values()):
            raise RuntimeError("install the guard before any route, or those routes would escape it")
        self._rule = rule

    def answer(self, kind: type[BaseException], to_error: Callable[[Any], HTTPError]) -> None:
        """Answer an exception of type `kind` (or of a subclass) escaping a handler as the HTTPError that
        `to_error(exc)` makes, as Starlette's exception handlers do: a layer raises its own errors and the
        plugin that owns them says how they are answered (the Postgres plugin: 503 when the database cannot
        answer, 409 for a unique violation). The closest registered type wins; anything else is a 500."""
        self._answers[kind] = to_error

    @property
    def guarded(self) -> bool:
        """Whether a guard checks the routes (`guard`)."""
        return self._rule is not None

    def wrap(self, layer: Callable[[Callable], Callable]) -> None:
        """Serve HTTP requests through `layer(serve)`, an ASGI callable that may answer itself or
        call `serve` (the app as it was), before any route is matched. The last layer is outermost."""
        self._serve = layer(self._serve)

    def abettor(self, method, route, handler, *args, **kwargs):
        # Heaven's "module.function" spelling resolved here, so that the rule sees the function itself.
        handler = _string_to_function_handler(handler)
        check = self._rule(handler) if self._rule is not None else None
        if method == SOCKET:
            if check is not None:
                raise TypeError(f"websocket {route} would escape the guard: check in the handler and mark it public")
        else:
            handler = answering_errors(handler, check, self._show_tracebacks, self._answers)
        return super().abettor(method, route, handler, *args, **kwargs)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        return await self._serve(scope, receive, send)

    async def _route(self, scope, receive, send):
        # The innermost layer (wrap): what Heaven's Router.__call__ does for an HTTP request, taken over
        # for the one route table an app without subdomains has. Heaven decodes every header, then parses
        # the Host header as an IP address to find a subdomain: 39.9k instructions a request, against
        # 7.0k for decoded_headers (bench/results/profile.md). Websockets and apps with subdomains go
        # through Heaven's.
        if scope["type"] != "http" or len(self.subdomains) > 1:
            return await self._through_heaven(scope, receive, send)
        try:
            headers = decoded_headers(scope)
        except UnicodeDecodeError:
            return await _malformed_header(send, "a header is not UTF-8")
        if type(headers.get("host")) is list:
            return await _malformed_header(send, MANY_HOSTS)
        if not self._baked:
            self._bake_schemas()
        res = await self._routes.handle(scope, receive, send, (DEFAULT, headers), self)
        body = res.body
        if isinstance(body, (dict, list)):  # a handler's own res.body = {...}: JSON, as Heaven makes it
            body = _json_body(res)
        if scope["method"] == HEAD:  # the headers a GET would have, never a body
            body = b""
        await send({"type": "http.response.start", "status": res.status, "headers": res.headers})
        if hasattr(body, "__aiter__"):  # res.stream()
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await send({"type": "http.response.body", "body": body, **res.metadata})
        if res.deferred:  # res.defer(fn): run once the answer is sent, taking the app
            await asyncio.gather(*[deferred(self) for deferred in res._deferred])

    async def _through_heaven(self, scope, receive, send):
        if scope["type"] == "http" and [name for name, _ in scope["headers"] if name == b"host"][1:]:
            return await _malformed_header(send, MANY_HOSTS)  # Heaven would fail on it: a 500
        try:
            return await super().__call__(scope, receive, send)
        except UnicodeDecodeError:
            # Heaven decodes every header as UTF-8 before it routes; HTTP lets a header carry other
            # bytes, and one such header would be a 500 for the client and a traceback in the log.
            if scope["type"] != "http" or not _undecodable_header(scope):
                raise
        await _malformed_header(send, "a header is not UTF-8")

    async def _lifespan(self, receive, send) -> None:
        await receive()  # lifespan.startup
        # Lines are batched while an app serves; a shutdown before this one (of another app of this process,
        # as in tests) had each written at once (logs.write_through).
        writer.write_through = False
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
            await _run_all(self.deinitializers, self, last_first=True)
        except Exception:
            log.exception("shutdown failed")
        await send({"type": "lifespan.shutdown.complete"})


def decoded_headers(scope) -> dict[str, Any]:
    """A request's headers as Heaven's `req.headers` holds them: names and values decoded as UTF-8 (else
    UnicodeDecodeError), the values of a name sent more than once in a list (after an empty one, the next
    replaces it, as in Heaven)."""
    headers: dict[str, Any] = {}
    for name, value in scope["headers"]:
        key = name.decode()
        seen = headers.get(key)
        if not seen:
            headers[key] = value.decode()
        elif type(seen) is list:
            seen.append(value.decode())
        else:
            headers[key] = [seen, value.decode()]
    return headers


# RFC 9112 3.2: a request with more than one Host header is answered 400.
MANY_HOSTS = "more than one Host header"


async def _malformed_header(send, detail: str) -> None:
    error = {"error": "malformed_header", "detail": detail}
    headers = [(b"content-type", b"application/json"), (b"x-request-id", ids.new_request_id().encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": _encode(error)})


def _json_body(res) -> bytes:
    # What Heaven's Router.__call__ does with a dict or list body.
    try:
        body = orjson.dumps(res.body)
    except Exception:
        log.exception("the answer's body is not JSON")
        res.status = 500
        return b"Internal Server Error: JSON Serialization Failed"
    if not any(name.lower() == b"content-type" for name, _ in res.headers):
        res.header("Content-Type", "application/json")
    return body


def _undecodable_header(scope) -> bool:
    try:
        for name, value in scope["headers"]:
            name.decode(), value.decode()
    except UnicodeDecodeError:
        return True
    return False


async def _run_all(hooks, app, last_first: bool = False) -> None:
    # Heaven stores startup and shutdown hooks in deques, wrapped to take the app.
    while hooks:
        await (hooks.pop() if last_first else hooks.popleft())(app)
