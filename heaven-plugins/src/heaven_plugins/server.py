"""The server's edge: uvicorn's HTTP protocol with bounds on header size, header and body time, idle
connections and their number, and the proxies whose forwarded headers are trusted.

Served with `uvicorn <package>.app:app --http heaven_plugins.server:HTTPProtocol`, as the Dockerfile does; the
bounds are read from the environment (and .env) as the settings are.

Why code of our own: uvicorn bounds idle keep-alive (`--timeout-keep-alive`, but not before a
connection's first request) and, with h11 only, header size; it has no header or body read timeout and no
connection limit that refuses before a request is read (`--limit-concurrency` answers 503 only once a
request's headers are complete, so half-sent requests still pile up). Another server would replace uvicorn
and its httptools parser, and a proxy is not always in front. So: a subclass of uvicorn's httptools
protocol that keeps its parser and its callbacks, and looks at what is left to read after each read: a
request that arrives whole (most do) costs one check, and only one that does not gets a timer.
"""

import asyncio
import ipaddress
import logging
import time
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import Seconds, from_env

log = logging.getLogger(__name__)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The bounds at the HTTP edge; each field is read from the variable of its name in capitals. A proxy
    in front can take the same values."""

    # The request line and headers together; past it, 431 and the connection closed.
    http_max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 16_384
    # From a request's first byte to its last header; then from there to the body's last byte. Past either, 408.
    http_header_timeout: Seconds = 10.0
    http_body_timeout: Seconds = 15.0
    # A connection with no request under way closes after this long, its first request included.
    http_keep_alive_timeout: Seconds = 5.0
    # Connections open at once; one more is answered 503 and closed before anything is read from it.
    http_max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # Comma-separated addresses or networks of the proxies whose X-Forwarded-For and X-Forwarded-Proto
    # are believed (uvicorn's own variable). Empty, none: a client is the address it connects from.
    forwarded_allow_ips: str = ""

    def __post_init__(self) -> None:
        # Each entry an address or a network: uvicorn would take `*` as every client (each could then claim any
        # address), and a typo as a name no peer ever has (each client then the proxy's one address).
        for entry in filter(None, (part.strip() for part in self.forwarded_allow_ips.split(","))):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"FORWARDED_ALLOW_IPS: {entry!r} is not an address or a network") from None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, env_file: Path | None = Path(".env")) -> "Limits":
        """Read the bounds as the settings are read: environment, then .dev.env, then .env (config.py)."""
        return from_env(cls, environ, env_file)


def _answer(status: bytes, error: str, detail: str, *extra: bytes) -> bytes:
    body = msgspec.json.encode({"error": error, "detail": detail})
    head = [b"HTTP/1.1 " + status, b"content-type: application/json", b"content-length: %d" % len(body)]
    return b"\r\n".join([*head, *extra, b"connection: close", b"", body])


class HTTPProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under `limits` (class-wide; `with_limits` makes a class for others).

    - An idle connection, a new one included, closes after HTTP_KEEP_ALIVE_TIMEOUT (uvicorn's own timer;
      this value replaces `--timeout-keep-alive`).
    - The request line and headers must arrive within HTTP_HEADER_TIMEOUT of the request's first byte
      and in HTTP_MAX_HEADER_BYTES; the body within HTTP_BODY_TIMEOUT after them. Else 408 or 431 and
      the connection is closed; a body cut off reaches the app as a disconnect.
    - A connection past HTTP_MAX_CONNECTIONS is answered 503 and closed at once.
    - `X-Forwarded-For` and `X-Forwarded-Proto` are believed from FORWARDED_ALLOW_IPS alone (empty: from
      no one), whatever uvicorn was told (`believe_only`).
    Each refusal is logged with the client's address; refused connections as a count, once a second at most.
    """

    # Slots, not instance attributes: uvicorn's protocol has so many that two more would turn its instances'
    # attributes into a plain dict, and every attribute uvicorn reads on each request would cost more.
    __slots__ = ("_deadline", "_header_bytes")
    limits: ClassVar[Limits]  # below, from the environment
    _refused: ClassVar[int] = 0  # connections refused since the last line saying so
    _refused_logged: ClassVar[float] = 0.0
    _believing: ClassVar[object] = None  # the uvicorn.Config whose proxy trust was set (believe_only)

    @classmethod
    def with_limits(cls, limits: Limits) -> type["HTTPProtocol"]:
        """This protocol under other limits (for `uvicorn.Config(http=...)`)."""
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, config, *args: Any, **kwargs: Any) -> None:
        if config is not HTTPProtocol._believing:  # once a server: a connection pays one comparison
            believe_only(config, self.limits.forwarded_allow_ips)
            HTTPProtocol._believing = config
        super().__init__(config, *args, **kwargs)
        self.timeout_keep_alive = self.limits.http_keep_alive_timeout
        # The timer of the part being read, and which: (handle, the request's scope, "headers" or "body").
        self._deadline: tuple[asyncio.TimerHandle, dict, str] | None = None
        self._header_bytes: tuple[dict | None, int] = (None, 0)  # the request's scope, and its bytes so far

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.http_max_connections:
            self._refuse_connection()
            return
        # uvicorn arms its keep-alive timer only after a response: a connection that never sends would stay.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the websocket protocol takes the connection over, with timeouts of its own
        super().handle_websocket_upgrade()

    # The only method of ours on a request's path: the parser's callbacks stay uvicorn's.
    def data_received(self, data: bytes) -> None:
        HttpToolsProtocol.data_received(self, data)  # not super(): a few hundred instructions a request less
        scope = self.scope
        if scope is not None and "method" in scope and (self.cycle is None or not self.cycle.more_body):
            return  # the usual case, whole requests: every line from here on would be paid by each
        part = self._pending()
        if part is None:
            return
        deadline = self._deadline
        if deadline is None or deadline[1] is not scope or deadline[2] != part:
            self._disarm()
            seconds = self.limits.http_header_timeout if part == "headers" else self.limits.http_body_timeout
            self._deadline = (self.loop.call_later(seconds, self._timed_out, scope, part, seconds), scope, part)
        if part == "headers":
            # Counted after parsing: a read that ends the headers may carry the body, which must not count.
            # httptools keeps an unfinished header however long it grows: its memory is bound here.
            counted, total = self._header_bytes
            total = (total if counted is scope else 0) + len(data)
            self._header_bytes = (scope, total)
            if total > self.limits.http_max_header_bytes:
                detail = f"the request line and headers exceed {self.limits.http_max_header_bytes} bytes"
                self._refuse(b"431 Request Header Fields Too Large", "header_too_large", detail)

    def _pending(self) -> str | None:
        """Which part of a request is still being read: "headers", "body", or None."""
        scope = self.scope
        if scope is None or self.transport.is_closing():
            return None
        if "method" not in scope:  # uvicorn sets it once the headers are complete
            return "headers"
        cycle = self.cycle
        if cycle is not None and cycle.scope is scope and cycle.more_body:
            return "body"
        return None

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline[0].cancel()
            self._deadline = None

    def _timed_out(self, scope: dict, part: str, seconds: float) -> None:
        self._deadline = None
        if self.scope is scope and self._pending() == part:  # else that part was read in time
            detail = f"the request's {part} took longer than {seconds:g} s"
            self._refuse(b"408 Request Timeout", "request_timeout", detail)

    def _refuse(self, status: bytes, reason: str, detail: str) -> None:
        if self.transport.is_closing():
            return
        log.warning({"message": "request refused", "reason": reason, "detail": detail, "client": self._host()})
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_answer(status, reason, detail))
        # An app reading the body receives a disconnect; whatever it sends after is dropped.
        self.transport.close()

    def _refuse_connection(self) -> None:
        cls = HTTPProtocol
        cls._refused += 1
        now = time.monotonic()
        # One line a second at most, with a count: a flood of connections must not become a flood of lines.
        if now - cls._refused_logged >= 1.0:
            limit = self.limits.http_max_connections
            detail = f"{cls._refused} connection(s) over HTTP_MAX_CONNECTIONS={limit} since the last such line"
            log.warning({"message": "connection refused", "reason": "too_many_connections", "detail": detail})
            cls._refused, cls._refused_logged = 0, now
        self.transport.write(
            _answer(b"503 Service Unavailable", "too_many_connections", "the server is full", b"retry-after: 1")
        )
        self.transport.close()

    def _host(self) -> str | None:
        return self.client[0] if self.client else None


def believe_only(config, allowed: str) -> None:
    """Have the server of uvicorn `config` believe forwarded headers from the proxies `allowed` names (uvicorn's
    FORWARDED_ALLOW_IPS syntax), and from no one when it is empty.

    The `uvicorn` command's own default believes 127.0.0.1 whenever FORWARDED_ALLOW_IPS is unset (and it reads the
    environment only, not .env): any program on the host, a proxy's neighbour included, could then choose the
    address it is logged and throttled by. So the setting the protocol was given wins, for websockets too (their
    protocol takes the app from the same config)."""
    app = config.loaded_app
    if isinstance(app, ProxyHeadersMiddleware):
        app = app.app
    config.forwarded_allow_ips = allowed
    # Nobody believed: no layer at all, rather than one that looks at every request's client for nothing.
    config.loaded_app = ProxyHeadersMiddleware(app, trusted_hosts=allowed) if allowed.strip() else app


def fit_file_limit(limits: Limits) -> None:
    """Let the process open the connections `limits` allow: each is a file descriptor, and containers often
    start with a soft limit of 1024, where a flood would end in accept() failing, unlogged, for everyone."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The pool's connections, log and listening sockets, the files Python opens: a few dozen; 256 to spare.
    wanted = limits.http_max_connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < wanted:
            log.warning("open files are limited to %d: lower HTTP_MAX_CONNECTIONS to %d or less", hard, hard - 256)


# What `uvicorn --http <package>.server:HTTPProtocol` serves under: read as it is imported, as app.py reads
# the settings.
HTTPProtocol.limits = Limits.from_env()
fit_file_limit(HTTPProtocol.limits)


def options(limits: Limits | None = None) -> dict[str, Any]:
    """uvicorn.Config's (or uvicorn.run's) keyword arguments for serving under `limits`, by default the
    environment's. Those are named by import path, which a server that reloads can pass to its workers."""
    fit_file_limit(limits or HTTPProtocol.limits)
    return {
        "http": f"{__name__}:HTTPProtocol" if limits is None else HTTPProtocol.with_limits(limits),
        "timeout_keep_alive": (limits or HTTPProtocol.limits).http_keep_alive_timeout,
        "forwarded_allow_ips": (limits or HTTPProtocol.limits).forwarded_allow_ips,
    }
