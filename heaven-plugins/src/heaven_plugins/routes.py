"""The App's route table: Heaven's Routes, answering an HTTP request itself, each answer JSON, with its request id."""

from collections.abc import Callable
from inspect import iscoroutinefunction
from time import perf_counter
from typing import Any

from heaven.constants import HEAD, SOCKET
from heaven.context import Context
from heaven.errors import AbortException
from heaven.request import Request
from heaven.response import Response
from heaven.router import Routes

from .errors import Answers, answer_error
from .logs import ids
from .logs.ids import REQUEST_ID, SANE_REQUEST_ID
from .web import send

_new = object.__new__
_set = object.__setattr__


def _context(application, provided: dict[str, Any]) -> Context:
    # Heaven's Context(application) holding the provided values, as ctx.keep() would have put them there.
    # Made without Context.__init__, which sets its two attributes through Context.__setattr__, a Python
    # call each that asks super() for the next: 9.9k instructions, and 7.2k to keep two values; made so,
    # values included, 4.5k (bench/results/profile.md). tests/test_heaven.py checks what a Context holds.
    c = _new(Context)
    _set(c, "_application", application)
    _set(c, "_data", provided.copy())
    return c


async def _body_in_parts(message: dict, receive, limit: int | None) -> bytes | None:
    # The body from its first message on, as Heaven's Routes.buffer reads it: None past `limit` bytes, the
    # rest still read but not kept, so that the client finishes sending and reads the 413.
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            chunks.clear()
        else:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return None if limit is not None and size > limit else b"".join(chunks)
        message = await receive()


class JSONRoutes(Routes):
    """Heaven's route table, with its own 404, 405 and 413 answers turned into JSON, the values of
    App.provide put on each request's context, and each answer given its request id and observed.

    An HTTP request is answered here (`_answer`) rather than by Heaven's Routes.handle, which does
    the same steps with work this App never needs: a handler's kind looked up again on each request
    (through an AttributeError), the route tree walked for a path that names a route outright (9.7k
    instructions against 0.6k), an empty query hint parsed. With App._route, which takes over Heaven's
    Router.__call__, that was 69k of the 706k instructions of a request (bench/results/profile.md).
    A websocket still goes through Heaven's."""

    def __init__(self, debug: bool = False, max_body_size: int | None = None) -> None:
        super().__init__()
        self.provided: dict[str, Any] = {}
        self.max_body_size = max_body_size
        self.observers: list[Callable] = []
        self.answers: Answers = {}  # the App's, for hooks
        self.in_flight = 0
        self._debug = debug
        # handler -> (what to call, whether to await it), as Heaven decides both on each request.
        self._callables: dict[Callable, tuple[Callable, bool]] = {}

    async def handle(self, scope, receive, asgi_send, metadata=None, application=None):
        # Every request passes here, whatever answers it: a handler, a hook, or a 404/405/413.
        request_id = metadata[1].get("x-request-id")  # the decoded headers; a list when repeated
        if type(request_id) is not str or not SANE_REQUEST_ID.fullmatch(request_id):
            request_id = ids.new_request_id()  # looked up each time: a forked process gets its own
        # The request's own task runs this: the id stays with this request, on every record made for it.
        REQUEST_ID.set(request_id)
        started = perf_counter()
        self.in_flight += 1
        http = scope["type"] == "http"
        try:
            if http:
                res = await self._answer(scope, receive, metadata, application)
            else:
                res = await super().handle(scope, receive, asgi_send, metadata, application)
        finally:
            self.in_flight -= 1
        # Not res.__dict__.pop(): on 3.11 asking for an instance's __dict__ builds it, 2k instructions.
        error = getattr(res, "_unhandled_error", None)
        if error is not None:  # raised by a hook: answered here, as JSON, not printed by Heaven as text
            del res._unhandled_error
            answer_error(res, error, self.answers, scope.get("method", ""), scope["path"], self._debug)
        # Appended, not res.headers = (...): Heaven's setter rebuilds the list, 1 µs a request.
        res.headers.append((b"x-request-id", request_id.encode()))
        if self.observers and http:  # a websocket has no method, no status
            seconds = perf_counter() - started
            route = res._req._route  # the matched route; None if none matched
            for observer in self.observers:
                observer(scope, res, route, seconds)
        return res

    async def _answer(self, scope, receive, metadata, application) -> Response:
        # Heaven's Routes.handle for HTTP, step for step (tests/test_heaven.py checks the steps).
        method, path = scope["method"], scope["path"]
        r = Request(scope, b"", receive, metadata, application)
        c = _context(application, self.provided)
        w = Response(context=c, app=application, request=r)
        if method == SOCKET:  # Heaven's method name for websocket routes, sent over HTTP: no HTTP route's
            return self.unmatched(scope, method, path, w)
        # A path that is a route with neither parameter nor wildcard is matched by its name: the tree
        # walk would end on it (a segment of its own wins over a parameter at every step).
        handler = self.cache[method].get(path) if method in self.cache else None
        if handler is not None and ":" not in path and "*" not in path:
            matched, root = path, self.routes[method]
            hint = self.queryhints.get((method, path))
            if hint:
                r.qh = hint  # what the tree walk sets; with no hint, it sets nothing a request reads
        else:
            matched, handler, root = self.resolve(method, path, r)
            # HEAD is a GET without a body: a GET route answers it.
            if not matched and method == HEAD:
                matched, handler, root = self.resolve("GET", path, r)
            if not matched:
                return self.unmatched(scope, method, path, w)
        if (method, matched) in self.streams:
            r._streaming = True
        else:
            # What Heaven's Routes.buffer does, without a coroutine of its own for the usual body, which comes in
            # one message within the limit (3k instructions a request, bench/results/profile.md).
            message = await receive()
            body, limit = message.get("body", b""), self.max_body_size
            if message.get("more_body", False) or (limit is not None and len(body) > limit):
                body = await _body_in_parts(message, receive, limit)
            if body is None:
                send(w, {"error": "payload_too_large", "detail": f"the body is over {limit} bytes"}, 413)
                return w
            r._body = body
        r._application = root.heaven_instance
        r._route = matched
        w._status, w._body = 200, b""  # not through Heaven's body setter (web.send says why)
        call, asynchronous = self._callables.get(handler) or self._callable(handler)
        try:
            if self.befores:
                await super().xhooks(self.befores, self.beforemethods, matched, r, w, c, before=True)
            if w._abort:
                raise AbortException
            if asynchronous:
                await call(r, w, c)
            else:
                call(r, w, c)
            if self.afters:
                await super().xhooks(self.afters, self.aftermethods, matched, r, w, c)
        except AbortException:
            return w
        except Exception as exc:
            # As Heaven does: the response kept (a hook's headers on it), the exception for handle().
            w._unhandled_error = exc
            w.status, w.body = 500, b"Internal Server Error"
        return w

    def _callable(self, handler) -> tuple[Callable, bool]:
        # Heaven calls a request handler object (heaven.Handler) through its __call__, and awaits what is a coroutine.
        call = handler.__call__ if hasattr(handler, "__requesthandler__") else handler
        found = self._callables[handler] = (call, iscoroutinefunction(call))
        return found

    async def xhooks(self, hookstore, methodstore, matched, r, w, c, before=False):
        # A websocket's hooks (HTTP requests: _answer). Heaven runs this twice a request, BEFORE hooks and
        # AFTER hooks, and spells out every wildcard pattern of the route before it looks one up: 1 µs each
        # time, hooks or not. Provided values instead of a BEFORE('/*') hook leave it nothing to do in most
        # apps. Heaven's public way, the plugin's hook and no override here, costs 6-8 % more instructions a
        # request.
        if before:
            for key, value in self.provided.items():
                c.keep(key, value)
        if hookstore:
            await super().xhooks(hookstore, methodstore, matched, r, w, c, before)

    def unmatched(self, scope, method, route, w):
        if scope["type"] != "http":
            return super().unmatched(scope, method, route, w)
        allowed = self.allowed(route)
        if not allowed:
            send(w, {"error": "not_found", "detail": f"nothing at {route}"}, 404)
            return w
        # OPTIONS asks which methods a route takes (RFC 9110, 9.3.7): it is answered for every route
        # that exists, so it is one of them, in this answer's Allow and in every 405's.
        allowed.add("OPTIONS")
        allow = ", ".join(sorted(allowed))
        if method == "OPTIONS":
            w.status, w.body = 204, b""
        else:
            send(w, {"error": "method_not_allowed", "detail": f"{method} is not allowed on {route}"}, 405)
        w.headers = "Allow", allow
        return w
