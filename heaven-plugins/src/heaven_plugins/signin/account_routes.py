"""The routes of accounts.py: verifying an address (and asking for a new link), resetting a password, changing the
address; and the bodies they read."""

from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from ..docs import Error, documented
from ..fields import Email, normal_email
from ..web import public, read
from .guard import client_address
from .keys import ACCOUNTS, AUTH, USER
from .passwords import Password

LinkToken = Annotated[str, Meta(min_length=1, max_length=128, description="the token of the link that was mailed")]


class Verification(Struct, forbid_unknown_fields=True):
    """The body of POST /auth/verify."""

    token: LinkToken


class AddressRequest(Struct, forbid_unknown_fields=True):
    """The body of POST /auth/password-reset and POST /auth/verify/resend: the address to mail a link to."""

    email: Email

    def __post_init__(self) -> None:
        self.email = normal_email(self.email)


class Reset(Struct, forbid_unknown_fields=True):
    """The body of POST /auth/password-reset/complete."""

    token: LinkToken
    password: Password


class EmailChange(Struct, forbid_unknown_fields=True):
    """The body of POST /auth/email-change: the new address, and the password of the signed-in user."""

    email: Email
    current_password: Annotated[str, Meta(max_length=256)]

    def __post_init__(self) -> None:
        self.email = normal_email(self.email)


class ChangeConfirmation(Struct, forbid_unknown_fields=True):
    """The body of POST /auth/email-change/complete."""

    token: LinkToken


decode_verification = msgspec.json.Decoder(Verification).decode
decode_address_request = msgspec.json.Decoder(AddressRequest).decode
decode_reset = msgspec.json.Decoder(Reset).decode
decode_email_change = msgspec.json.Decoder(EmailChange).decode
decode_change_confirmation = msgspec.json.Decoder(ChangeConfirmation).decode


def _answer(res, status: int) -> None:
    res.status = status
    res.body = b""


@public
@documented(body=Verification, responses={204: None, 400: Error, 413: Error, 422: Error})
async def verify_address(req, res, ctx):
    """Verify an address.

    With the token of the link mailed at sign-up: single use; 400 if it is unknown, used already or expired.
    """
    body = read(req, decode_verification)
    await ctx.peek(ACCOUNTS).verify(ctx.peek(AUTH).db, body.token)
    _answer(res, 204)


@public
@documented(body=AddressRequest, responses={202: None, 400: Error, 413: Error, 422: Error, 429: Error})
async def resend_verification(req, res, ctx):
    """Ask for a new link that verifies an address.

    It is mailed to the address if the address is an active user's not verified yet, and the link mailed before
    stops working. The answer is 202, the same and in about the same time whatever the address, so it tells
    nobody which addresses have accounts, nor which are verified; signing in is not needed, so it serves where
    only verified addresses may sign in. Repeated requests get 429 with `Retry-After`.
    """
    body = read(req, decode_address_request)
    await ctx.peek(ACCOUNTS).resend_verification(ctx.peek(AUTH).db, body.email, client_address(req))
    _answer(res, 202)


@public
@documented(body=AddressRequest, responses={202: None, 400: Error, 413: Error, 422: Error, 429: Error})
async def request_reset(req, res, ctx):
    """Ask for a password reset link.

    It is mailed to the address if the address is an active user's. The answer is 202, the same and in about
    the same time whether the address is a user's or not, so it tells nobody which addresses have accounts.
    Repeated requests get 429 with `Retry-After`.
    """
    body = read(req, decode_address_request)
    await ctx.peek(ACCOUNTS).request_reset(ctx.peek(AUTH).db, body.email, client_address(req))
    _answer(res, 202)


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
    _answer(res, 204)


@documented(
    body=EmailChange,
    responses={202: None, 400: Error, 403: Error, 404: Error, 409: Error, 413: Error, 422: Error, 429: Error},
)
async def request_email_change(req, res, ctx):
    """Ask to change your address: a link is mailed to the new one.

    Your address changes once the link's token comes back (POST /auth/email-change/complete); until then it
    stays as it is, and a new request voids the link before it. 403 if `current_password` is wrong (counted
    as a failed sign-in), 409 if the new address is a user's already, 422 if it is yours. Repeated requests
    get 429 with `Retry-After`.
    """
    body = read(req, decode_email_change)
    user_id, address = ctx.peek(USER).id, client_address(req)
    await ctx.peek(ACCOUNTS).request_change(ctx.peek(AUTH), user_id, body.email, body.current_password, address)
    _answer(res, 202)


@public
@documented(body=ChangeConfirmation, responses={204: None, 400: Error, 409: Error, 413: Error, 422: Error})
async def complete_email_change(req, res, ctx):
    """Change your address with the link mailed to the new one.

    The address the link went to becomes yours, verified, and the old one is told by mail. The token is
    single use, void once your password or address changed; 400 for a token not live, 409 if the address
    became another user's meanwhile.
    """
    body = read(req, decode_change_confirmation)
    await ctx.peek(ACCOUNTS).change(ctx.peek(AUTH).db, body.token)
    _answer(res, 204)
