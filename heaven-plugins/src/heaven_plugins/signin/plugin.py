"""Sign-in: the plugin that guards every route not marked public, issues and revokes tokens, and throttles guessing."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import msgspec
from heaven.context import Key
from msgspec import Meta, Struct

from ..docs import Error, documented
from ..fields import Email, normal_email
from ..postgres import DatabaseUnavailable, explain, postgres_of
from ..web import HTTPError, public, read, send
from .passwords import Passwords, PasswordsBusy
from .tokens import DELETE_EXPIRED_REVOCATIONS, INSERT_REVOCATION, Principal, Revocations, Tokens

log = logging.getLogger(__name__)

# Who signed in, on the context of every request a token let through: `ctx.peek(USER)`.
USER: Key[Principal] = Key("user")
# The plugin itself, on every request's context: `ctx.peek(AUTH)`.
AUTH: Key["Auth"] = Key("auth")

REFRESH_EVERY = 1.0  # seconds between two reads of the revocations
# With no successful read for this long, a revocation could be missed: tokens are refused (503)
# until Postgres answers again. A revoked token thus stops working everywhere within 5 s.
STALE_AFTER = 5.0
HOUSEKEEPING_EVERY = 60.0  # seconds between two sweeps of expired revocations and old failure counts


def admin(handler):
    """Mark a handler as needing an admin's token: a signed-in user who is not an admin gets 403."""
    handler.admin = True
    return handler


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

# The user's row is locked FOR SHARE, so a change to it that has not committed yet (a new password,
# deactivated, demoted, deleted) is waited for and then read, and the clock is read only after the
# lock is held: after the change's commit, so after its cutoff (tokens.py). Read in the same statement
# without the lock, the old row would come with a time later than the cutoff, and a token issued from
# it would outlive the change. The clock is Postgres's, as the cutoffs' are.
SELECT_SIGN_IN = """
WITH signing_in AS MATERIALIZED (
    SELECT id, email, password_hash, is_active, is_admin FROM users WHERE lower(email) = lower($1) FOR SHARE
)
SELECT *, extract(epoch FROM clock_timestamp())::float8 AS now FROM signing_in
"""
# Only if the password did not change meanwhile.
UPDATE_HASH = "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2"
# Both in 0003_sign_in_counts.sql, where the order in which they lock the counts is explained.
ADMIT_ATTEMPT = "SELECT account, known, retry_after FROM sign_in_admit($1, $2, $3, $4, $5, $6)"
SETTLE_ATTEMPT = "SELECT sign_in_settle($1, $2, $3, $4)"
# SKIP LOCKED: a sweep never waits for a sign-in's locks, so it cannot deadlock with one.
DELETE_OLD_COUNTS = """
DELETE FROM sign_in_counts WHERE (account, address) IN (
    SELECT account, address FROM sign_in_counts WHERE window_start < now() - make_interval(secs => $1)
    FOR UPDATE SKIP LOCKED
)
"""
DELETE_OLD_KNOWN = "DELETE FROM sign_in_known WHERE signed_in_at < now() - make_interval(secs => $1)"
# Written by the previous version's processes only (0002_sign_in.sql), until a later migration drops it.
DELETE_OLD_FAILURES = "DELETE FROM sign_in_failures WHERE window_start < now() - make_interval(secs => $1)"
# An admin's unlock (admin.py --unlock): the account's counts, its own first, then per address, in
# the order sign-ins lock them; each answers the failures it forgot.
DELETE_ACCOUNT_COUNT = """
WITH gone AS (DELETE FROM sign_in_counts WHERE account = lower($1) AND address = '' RETURNING failures)
SELECT coalesce(sum(failures), 0)::int FROM gone
"""
DELETE_PAIR_COUNTS = """
WITH gone AS (DELETE FROM sign_in_counts WHERE account = lower($1) RETURNING failures)
SELECT coalesce(sum(failures), 0)::int FROM gone
"""


class Attempt(Struct, frozen=True):
    """An admitted sign-in attempt, until it is settled (Throttle.settle)."""

    account: str  # lower(email), as Postgres folds it for the lookup
    address: str
    known: bool  # the account was signed in to from this address lately


class Throttle:
    """Failed sign-ins counted in Postgres, so that every process sees one count. Over `window`
    seconds, at most `per_address` from one client address whatever the account, and `per_email`
    for one account from one address. An account also takes at most `per_email` failures from all
    the addresses it was not signed in to from within `known_for` seconds: a guesser locks out
    other guessers, never the owner at an address they used."""

    def __init__(
        self, per_email: int = 5, per_address: int = 50, window: float = 900.0, known_for: float = 30 * 86400.0
    ) -> None:
        self.per_email, self.per_address, self.window, self.known_for = per_email, per_address, window, known_for

    async def attempt(self, db, email: str, address: str) -> Attempt:
        """Admit a sign-in attempt, or 429 with Retry-After if a count is at its limit. Settle what
        it returns with `settle`, whatever the outcome."""
        account, known, retry_after = await db.fetchrow(
            ADMIT_ATTEMPT, email, address, self.per_email, self.per_address, self.window, self.known_for
        )
        if retry_after is not None:
            seconds = max(1, round(retry_after))
            raise HTTPError(
                429,
                "too_many_attempts",
                f"too many failed sign-ins; try again in {seconds} s",
                headers=(("Retry-After", str(seconds)),),
            )
        return Attempt(account, address, known)

    async def settle(self, db, attempt: Attempt, succeeded: bool | None) -> None:
        """Count a failure, or forgive this address's failures and remember it as the account's; None
        (the password was never checked) counts neither."""
        await db.execute(SETTLE_ATTEMPT, attempt.account, attempt.address, attempt.known, succeeded)


class Auth:
    """The plugin: `app.plugin(Auth(secrets, ...))`, installed before the routes it guards.

    - Every route registered after it needs `Authorization: Bearer <token>` (401 with
      `WWW-Authenticate: Bearer` without a valid one), unless its handler is marked `@public`;
      one marked `@admin` needs an admin's token (403 for anyone else). The signed-in user is on
      the context: `ctx.peek(USER)`.
    - A token is checked in-process: its signature and age (tokens.py), then the revocations, an
      in-memory copy of two tables that a background task reads from Postgres every second. No
      request waits on the database to be signed in. If that copy cannot be refreshed for
      STALE_AFTER seconds, tokens are refused with a 503 until it can.
    - POST /auth/token signs in, DELETE /auth/token signs out; failed sign-ins are throttled.
    """

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        token_ttl: float = 3600.0,
        passwords: Passwords | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self._secrets = list(secrets)
        self.ttl = token_ttl
        self.passwords = passwords or Passwords()
        self.throttle = throttle or Throttle()
        self.revocations = Revocations(token_ttl)
        self.tokens: Tokens | None = None  # made at startup, which refuses a missing or short secret
        self._db = None
        self._stale = True  # until the revocations are first read
        self._expiry: asyncio.TimerHandle | None = None
        self._refresher: asyncio.Task | None = None

    def install(self, app) -> None:
        """Guard `app`'s routes from now on, put the plugin on every request's context, register
        POST and DELETE /auth/token, and read the revocations from startup to shutdown."""
        app.guard(self._rule)
        app.keep(AUTH.name, self)
        app.provide(AUTH.name, self)
        app.ON("startup", self.startup)
        app.ON("shutdown", self.shutdown)
        app.POST("/auth/token", create_token)
        app.DELETE("/auth/token", delete_token)

    async def startup(self, app) -> None:
        """Check the secret, read every revocation in force, and keep reading them every second;
        a secret missing or short stops the app from starting."""
        try:
            self.tokens = Tokens(self._secrets, self.ttl)
        except ValueError as exc:
            make = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            raise RuntimeError(f"{exc}; make one with: {make}") from None
        self._db = postgres_of(app)
        if self._db is None:
            raise RuntimeError("Auth needs the Postgres plugin installed before it")
        await self.passwords.start()
        try:
            await self.revocations.refresh(self._db)
        except Exception as exc:  # POOL_MIN_SIZE=0 lets the app start without Postgres: sign-in waits for it
            log.warning("cannot read the token revocations yet (%s): tokens are refused until then", _reason(exc))
        else:
            self._fresh()
        self._refresher = asyncio.create_task(self._keep_fresh())

    async def shutdown(self, app) -> None:
        """Stop reading the revocations and close the password threads."""
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        if self._expiry is not None:
            self._expiry.cancel()
        self.passwords.stop()

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization` header's bearer token; else 401 (or 503 when the
        revocations are out of date)."""
        # Heaven gives a list for a header sent twice. The scheme's case does not matter (RFC 9110).
        if type(authorization) is str and authorization[:7].lower() == "bearer ":
            principal = self.tokens.read(authorization[7:], time.time())
            if principal is not None and not self.revocations.voids(principal):
                if self._stale:
                    raise DatabaseUnavailable(TimeoutError(f"revocations not read for {STALE_AFTER} s"))
                return principal
        raise self._refuse(authorization)

    def _refuse(self, authorization) -> HTTPError:
        # Off the path of a good token: why this one was refused, for the log only; the client gets
        # one answer for every bad token. Never a piece of the token itself.
        if authorization is None:
            log.info("token refused: no Authorization header")
            return _unauthorized("missing_token", "this route needs a bearer token (POST /auth/token)", "Bearer")
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
        return _unauthorized("invalid_token", "the token is invalid, expired or revoked", challenge)

    def require_user(self, req, ctx) -> None:
        """The guard of a route that needs a token."""
        ctx.keep(USER, self.authenticate(req.headers.get("authorization")))

    def require_admin(self, req, ctx) -> None:
        """The guard of a route marked @admin."""
        principal = self.authenticate(req.headers.get("authorization"))
        if not principal.is_admin:
            raise HTTPError(403, "forbidden", "only an admin may do this")
        ctx.keep(USER, principal)

    async def check_password(self, db, email: str, password: str, address: str) -> asyncpg.Record | None:
        """The user row if `password` is theirs and they are active, else None; throttled (429).

        An unknown email is checked against a decoy hash, so that it takes as long to refuse as
        a wrong password. A hash made with old parameters is made again with the current ones.
        """
        attempt = await self.throttle.attempt(db, email, address)
        succeeded: bool | None = False
        try:
            user = await db.fetchrow(SELECT_SIGN_IN, email)
            hashed = user["password_hash"] if user is not None else None
            try:
                succeeded = await self.passwords.verify(hashed, password) and user["is_active"]
            except PasswordsBusy:
                succeeded = None  # never checked: a busy server must not lock the owner out
                raise
        finally:  # an error or a cancelled request counts as a failure, as an attempt not settled would
            await self.throttle.settle(db, attempt, succeeded)
        if not succeeded:
            return None
        if self.passwords.needs_rehash(hashed):
            # A rehash is a sign-up's kind of work; when that lane is full, the next sign-in makes it.
            with contextlib.suppress(PasswordsBusy):
                await db.execute(UPDATE_HASH, user["id"], hashed, await self.passwords.hash(password))
        return user

    def _rule(self, handler):
        # Asked once per route, as it is registered (App.guard): requests pay only for the check.
        if getattr(handler, "public", False):
            return None
        return self.require_admin if getattr(handler, "admin", False) else self.require_user

    async def _keep_fresh(self) -> None:
        failing = self._stale
        loop = asyncio.get_running_loop()
        housekeeping = loop.time() + HOUSEKEEPING_EVERY
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            try:
                async with asyncio.timeout(STALE_AFTER):
                    await self.revocations.refresh(self._db)
            except Exception as exc:
                if not failing:
                    log.warning("cannot read the token revocations: %s", _reason(exc))
                failing = True
                continue
            if failing:
                log.info("reading the token revocations again")
            failing = False
            self._fresh()
            if loop.time() >= housekeeping:
                housekeeping = loop.time() + HOUSEKEEPING_EVERY
                await self._sweep()

    def _fresh(self) -> None:
        self._stale = False
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(STALE_AFTER, self._go_stale)

    def _go_stale(self) -> None:
        self._stale = True
        log.error("token revocations not read for %s s: refusing tokens (503) until Postgres answers", STALE_AFTER)

    async def _sweep(self) -> None:
        self.revocations.forget_expired(time.time())
        try:
            async with asyncio.timeout(STALE_AFTER):
                await self._db.execute(DELETE_EXPIRED_REVOCATIONS, self.ttl)
                await self._db.execute(DELETE_OLD_COUNTS, self.throttle.window)
                await self._db.execute(DELETE_OLD_KNOWN, self.throttle.known_for)
                await self._db.execute(DELETE_OLD_FAILURES, self.throttle.window)
        except Exception as exc:  # a read-only or busy database: the rows wait for the next sweep
            log.info("could not sweep expired revocations and failures: %s", type(exc).__name__)


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, DatabaseUnavailable) else explain(exc)


def _unauthorized(code: str, detail: str, challenge: str) -> HTTPError:
    return HTTPError(401, code, detail, headers=(("WWW-Authenticate", challenge),))


def client_address(req) -> str:
    """The client's IP address as the server saw it (behind a proxy, see uvicorn's --proxy-headers)."""
    try:
        return req.ip.address
    except TypeError:  # the server did not say (a unix socket)
        return "unknown"


@public
@documented(body=Credentials, responses={200: Token, 400: Error, 401: Error, 413: Error, 422: Error, 429: Error})
async def create_token(req, res, ctx):
    """Sign in: a bearer token for this email and password.

    An unknown email and a wrong password get the same 401, in about the same time. Repeated
    failures get 429 with `Retry-After`: from one address, for one account from one address, and
    for one account from every address it was never signed in from; an address it was signed in
    from is not locked out by guesses made elsewhere.
    """
    credentials = read(req, decode_credentials)
    auth = ctx.peek(AUTH)
    db = auth._db
    user = await auth.check_password(db, credentials.email, credentials.password, client_address(req))
    if user is None:
        raise _unauthorized("invalid_credentials", "wrong email or password", "Bearer")
    token, principal = auth.tokens.issue(user["id"], user["is_admin"], user["now"])
    expires_at = datetime.fromtimestamp(principal.issued_at + auth.ttl, UTC)
    send(res, Token(token, "bearer", expires_at))
    res.headers = "Cache-Control", "no-store"


@documented(responses={204: None})
async def delete_token(req, res, ctx):
    """Sign out: the token this request carries stops working, in every process within 5 s."""
    principal = ctx.peek(USER)
    await ctx.peek(AUTH)._db.execute(INSERT_REVOCATION, principal.token_id, principal.issued_at)
    ctx.peek(AUTH).revocations.revoke(principal)
    res.status = 204
    res.body = b""
