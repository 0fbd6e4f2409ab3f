"""CORS: which other sites' pages a browser lets call the API, and their preflight requests answered."""

import re
from collections.abc import Iterable

from .logs import ids

# A scheme, a host and an optional port: what a browser sends as `Origin`. "null" (sandboxed
# frames, file: pages) is refused on purpose: any page can make its origin null.
ORIGIN = re.compile(r"https?://[^\s/?#]+")
METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
# What a page's script may send, and read, beyond the CORS-safelisted headers.
ALLOW_HEADERS = "Authorization, Content-Type, X-Request-ID"
EXPOSE_HEADERS = "Location, Retry-After, WWW-Authenticate, X-Request-ID"
MAX_AGE = "600"  # seconds a browser may reuse a preflight's answer


def parse_origins(setting: str) -> list[str]:
    """CORS_ORIGINS (comma-separated) as a list; ValueError naming any entry that is not an origin."""
    origins = [origin.strip().rstrip("/") for origin in setting.split(",") if origin.strip()]
    for origin in origins:
        if origin != "*" and not ORIGIN.fullmatch(origin):
            raise ValueError(f"{origin!r} is not an origin such as https://app.example.com (or *)")
    return origins


class CORS:
    """The plugin: `app.plugin(CORS(["https://app.example.com"]))`. With no origins it adds nothing.

    A request from a listed origin gets `Access-Control-Allow-Origin` naming it; a preflight
    (OPTIONS with `Access-Control-Request-Method`) is answered 204 before any route or sign-in
    check. `*` allows every origin. Tokens travel in the `Authorization` header, not in cookies,
    so no answer ever carries `Access-Control-Allow-Credentials`: with `*` or without, a page
    from another site cannot make a browser send a user's credentials along.

    Not Heaven's `app.cors()`: it answers an unlisted origin `Access-Control-Allow-Origin: null`,
    which every sandboxed page matches, and without origins it allows `*`.
    """

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = {origin.encode() for origin in origins}
        self.any = b"*" in self.origins

    def install(self, app) -> None:
        """Wrap `app`'s HTTP requests, if there are origins to allow."""
        if self.origins:
            app.wrap(self.layer)

    def layer(self, serve):
        """The ASGI layer around `serve`."""

        async def cors(scope, receive, send):
            origin = _header(scope, b"origin")
            if origin is None or not (self.any or origin in self.origins):
                return await serve(scope, receive, send)
            if scope["type"] != "http":
                # A websocket handshake: browsers apply no CORS to it, and it has no method to read.
                return await serve(scope, receive, send)
            allowed = [(b"access-control-allow-origin", b"*" if self.any else origin)]
            if not self.any:
                allowed.append((b"vary", b"Origin"))  # the answer differs by origin: caches must know
            if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
                preflight = [
                    (b"access-control-allow-methods", METHODS.encode()),
                    (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                    (b"access-control-max-age", MAX_AGE.encode()),
                    # Answered before the routes, which give every other answer its id: the same rule here.
                    (b"x-request-id", _request_id(scope)),
                ]
                await send({"type": "http.response.start", "status": 204, "headers": allowed + preflight})
                await send({"type": "http.response.body", "body": b""})
                return None
            allowed.append((b"access-control-expose-headers", EXPOSE_HEADERS.encode()))

            async def send_with_cors(message):
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", ()), *allowed]}
                await send(message)

            return await serve(scope, receive, send_with_cors)

        return cors


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _request_id(scope) -> bytes:
    # The client's X-Request-ID when it is sane, else a new one, as the App (app.py) keeps it for every other answer.
    sent = _header(scope, b"x-request-id")
    if sent is not None and ids.SANE_REQUEST_ID.fullmatch(sent.decode("latin-1")):
        return sent
    return ids.new_request_id().encode()
