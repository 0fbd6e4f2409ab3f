"""The guard: which routes need a token (all but those marked `@public`) or an admin's (`@admin`), and the check of
a request's bearer token, in-process, against the revocations as last read."""

import logging
import time

from ..postgres import DatabaseUnavailable
from ..web import HTTPError
from .keys import USER
from .tokens import Principal, Revocations, Tokens

log = logging.getLogger(__name__)

# With no successful read of the revocations for this long, a revocation could be missed: tokens are
# refused (503) until Postgres answers again. A revoked token thus stops working everywhere within 5 s.
STALE_AFTER = 5.0


def admin(handler):
    """Mark a handler as needing an admin's token: a signed-in user who is not an admin gets 403."""
    handler.admin = True
    return handler


def client_address(req) -> str:
    """The client's IP address: the connection's, or the one a proxy named in FORWARDED_ALLOW_IPS forwarded
    (`X-Forwarded-For`, applied by heaven_plugins.server before the app sees the request)."""
    try:
        return req.ip.address
    except TypeError:  # the server did not say (a unix socket)
        return "unknown"


def unauthorized(code: str, detail: str, challenge: str) -> HTTPError:
    """A 401 with the `WWW-Authenticate` challenge it needs (RFC 9110)."""
    return HTTPError(401, code, detail, headers=(("WWW-Authenticate", challenge),))


class Guard:
    """Checks each request of a guarded route, without waiting on the database: a token's signature
    and age (`tokens`, set when the plugin starts), then `revocations`, the in-memory copy the plugin
    keeps fresh. While `stale` (the copy is out of date, or was never read) a token is refused with
    a 503 rather than trusted."""

    def __init__(self, revocations: Revocations) -> None:
        self.revocations = revocations
        self.tokens: Tokens | None = None
        self.stale = True  # until the revocations are first read

    def rule(self, handler):
        """The check a route's handler needs, or None for one marked `@public` (App.guard's rule)."""
        # Asked once per route, as it is registered: requests pay only for the check.
        if getattr(handler, "public", False):
            return None
        return self.require_admin if getattr(handler, "admin", False) else self.require_user

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization` header's bearer token; else 401 (or 503 when the
        revocations are out of date)."""
        # Heaven gives a list for a header sent twice.
        if type(authorization) is str:
            principal = self.tokens.bearer(authorization, time.time())
            if principal is not None and not self.revocations.voids(principal):
                if self.stale:
                    raise DatabaseUnavailable(TimeoutError(f"revocations not read for {STALE_AFTER} s"))
                return principal
        raise self._refuse(authorization)

    def require_user(self, req, ctx) -> None:
        """The check of a route that needs a token."""
        ctx.keep(USER, self.authenticate(req.headers.get("authorization")))

    def require_admin(self, req, ctx) -> None:
        """The check of a route marked @admin."""
        principal = self.authenticate(req.headers.get("authorization"))
        if not principal.is_admin:
            raise HTTPError(403, "forbidden", "only an admin may do this")
        ctx.keep(USER, principal)

    def _refuse(self, authorization) -> HTTPError:
        # Off the path of a good token: why this one was refused, for the log only; the client gets
        # one answer for every bad token. Never a piece of the token itself.
        if authorization is None:
            log.info("token refused: no Authorization header")
            return unauthorized("missing_token", "this route needs a bearer token (POST /auth/token)", "Bearer")
        if type(authorization) is not str:
            reason = "Authorization header sent more than once"
        elif authorization[:7].lower() != "bearer ":
            reason = "not a Bearer token"
        else:
            token = authorization[7:]
            principal = self.tokens.read(token, time.time())
            if principal is None:
                reason = self.tokens.refusal(token, time.time())
            elif principal.token_id in self.revocations.tokens:
                reason = f"signed out (user {principal.id})"
            else:
                reason = f"revoked: user {principal.id} changed (password, role, active or deleted) since"
        log.info("token refused: %s", reason)
        # One answer for every bad token: altered, expired, signed out, or its user changed.
        challenge = 'Bearer error="invalid_token"'
        return unauthorized("invalid_token", "the token is invalid, expired or revoked", challenge)
