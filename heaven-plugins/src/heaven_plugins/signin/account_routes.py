"""POST /auth/verify, POST /auth/password-reset and POST /auth/password-reset/complete, and the bodies they read."""

from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from ..docs import Error, documented
from ..fields import Email, normal_email
from ..web import public, read
from .guard import client_address
from .keys import ACCOUNTS, AUTH
from .passwords import Password
from .throttle import TooManyAttempts

LinkToken = Annotated[str, Meta(min_length=1, max_length=128, description="the token of the link that was mailed")]


class Verification(Struct, forbid_unknown_fields=True):
    """The body of POST /auth/verify."""

    token: LinkToken


class ResetRequest(Struct, forbid_unknown_fields=True):
    """The body of POST /auth/password-reset."""

    email: Email

    def __post_init__(self) -> None:
        self.email = normal_email(self.email)


class Reset(Struct, forbid_unknown_fields=True):
    """The body of POST /auth/password-reset/complete."""

    token: LinkToken
    password: Password


decode_verification = msgspec.json.Decoder(Verification).decode
decode_reset_request = msgspec.json.Decoder(ResetRequest).decode
decode_reset = msgspec.json.Decoder(Reset).decode


def _no_content(res) -> None:
    res.status = 204
    res.body = b""


@public
@documented(body=Verification, responses={204: None, 400: Error, 413: Error, 422: Error})
async def verify_address(req, res, ctx):
    """Verify an address.

    With the token of the link mailed at sign-up: single use; 400 if it is unknown, used already or expired.
    """
    body = read(req, decode_verification)
    await ctx.peek(ACCOUNTS).verify(ctx.peek(AUTH).db, body.token)
    _no_content(res)


@public
@documented(body=ResetRequest, responses={202: None, 400: Error, 413: Error, 422: Error, 429: Error})
async def request_reset(req, res, ctx):
    """Ask for a password reset link.

    It is mailed to the address if the address is an active user's. The answer is 202, the same and in about
    the same time whether the address is a user's or not, so it tells nobody which addresses have accounts.
    Repeated requests get 429 with `Retry-After`.
    """
    body = read(req, decode_reset_request)
    accounts = ctx.peek(ACCOUNTS)
    try:
        await accounts.request_reset(ctx.peek(AUTH).db, body.email, client_address(req))
    except TooManyAttempts as exc:
        raise accounts.too_many(exc) from None
    res.status = 202
    res.body = b""


@public
@documented(body=Reset, responses={204: None, 400: Error, 413: Error, 422: Error, 503: Error})
async def complete_reset(req, res, ctx):
    """Set a new password with a reset link's token.

    The token is single use, void once the password changed; every token the user was issued stops working
    (in every process within 5 s). 400 for a token not live.
    """
    body = read(req, decode_reset)
    auth, accounts = ctx.peek(AUTH), ctx.peek(ACCOUNTS)
    await accounts.check_reset(auth.db, body.token)  # a password is hashed only for a live link
    user_id = await accounts.reset(auth.db, body.token, await auth.passwords.hash(body.password))
    await auth.revocations.refresh_user(auth.db, user_id)  # this process refuses the old tokens at once
    _no_content(res)
