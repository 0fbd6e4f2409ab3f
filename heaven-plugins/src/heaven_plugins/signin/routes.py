"""POST /auth/token (sign in) and DELETE /auth/token (sign out), and the bodies they read and send."""

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from ..docs import Error, documented
from ..fields import Email, normal_email
from ..web import HTTPError, public, read, send
from .guard import client_address, unauthorized
from .keys import AUTH, USER
from .tokens import INSERT_REVOCATION


class Credentials(Struct, forbid_unknown_fields=True):
    """The body of POST /auth/token."""

    email: Email
    password: Annotated[str, Meta(max_length=256)]

    def __post_init__(self) -> None:
        # Looked up as sign-up stored it: the address typed at sign-up, trimmed or not, signs in.
        self.email = normal_email(self.email)


class Token(Struct):
    """A bearer token: send `Authorization: Bearer <access_token>` until `expires_at`."""

    access_token: str
    token_type: str
    expires_at: datetime


decode_credentials = msgspec.json.Decoder(Credentials).decode


@public
@documented(
    body=Credentials, responses={200: Token, 400: Error, 401: Error, 403: Error, 413: Error, 422: Error, 429: Error}
)
async def create_token(req, res, ctx):
    """Sign in: a bearer token for this email and password.

    An unknown email and a wrong password get the same 401, in about the same time. Repeated
    failures get 429 with `Retry-After`: from one address, for one account from one address, and
    for one account from every address it was never signed in from; an address it was signed in
    from is not locked out by guesses made elsewhere. Where only verified addresses may sign in, the
    right password of an unverified one gets 403.
    """
    credentials = read(req, decode_credentials)
    auth = ctx.peek(AUTH)
    user = await auth.check_password(auth.db, credentials.email, credentials.password, client_address(req))
    if user is None:
        raise unauthorized("invalid_credentials", "wrong email or password", "Bearer")
    if not (auth.unverified_may_sign_in or user["is_verified"]):
        raise HTTPError(403, "unverified", "verify your address first: follow the link mailed to it", "email")
    token, principal = auth.tokens.issue(user["id"], user["is_admin"], user["now"])
    expires_at = datetime.fromtimestamp(principal.issued_at + auth.ttl, UTC)
    send(res, Token(token, "bearer", expires_at))
    res.headers = "Cache-Control", "no-store"


@documented(responses={204: None})
async def delete_token(req, res, ctx):
    """Sign out: the token this request carries stops working, in every process within 5 s."""
    principal, auth = ctx.peek(USER), ctx.peek(AUTH)
    await auth.db.execute(INSERT_REVOCATION, principal.token_id, principal.issued_at)
    auth.revocations.revoke(principal)
    res.status = 204
    res.body = b""
