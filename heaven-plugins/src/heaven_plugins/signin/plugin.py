"""Sign-in, the plugin: guards every route not marked public, issues and revokes tokens, throttles guessing, and
keeps the revocations each process checks tokens against fresh."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import asyncpg

from ..postgres import DatabaseUnavailable, explain, postgres_of
from ..web import HTTPError
from .guard import STALE_AFTER, Guard
from .keys import AUTH
from .passwords import Passwords, PasswordsBusy
from .routes import create_token, delete_token
from .throttle import Throttle, TooManyAttempts
from .tokens import DELETE_EXPIRED_REVOCATIONS, Revocations, Tokens

log = logging.getLogger(__name__)

REFRESH_EVERY = 1.0  # seconds between two reads of the revocations
HOUSEKEEPING_EVERY = 60.0  # seconds between two sweeps of expired revocations and old failure counts

# The user's row is locked FOR SHARE, so a change to it that has not committed yet (a new password,
# deactivated, demoted, deleted) is waited for and then read, and the clock is read only after the
# lock is held: after the change's commit, so after its cutoff (tokens.py). Read in the same statement
# without the lock, the old row would come with a time later than the cutoff, and a token issued from
# it would outlive the change. The clock is Postgres's, as the cutoffs' are.
SELECT_SIGN_IN = """
WITH signing_in AS MATERIALIZED (
    SELECT id, email, password_hash, is_active, is_admin, is_verified FROM users
    WHERE lower(email) = lower($1) FOR SHARE
)
SELECT *, extract(epoch FROM clock_timestamp())::float8 AS now FROM signing_in
"""
# Only if the password did not change meanwhile.
UPDATE_HASH = "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2"


class Auth:
    """The plugin: `app.plugin(Auth(secrets, ...))`, installed before the routes it guards.

    - Every route registered after it needs `Authorization: Bearer <token>` (401 with
      `WWW-Authenticate: Bearer` without a valid one), unless its handler is marked `@public`;
      one marked `@admin` needs an admin's token (403 for anyone else). The signed-in user is on
      the context: `ctx.peek(USER)`.
    - A token is checked in-process (guard.py): its signature and age (tokens.py), then the
      revocations, an in-memory copy of two tables that a background task reads from Postgres
      every second. No request waits on the database to be signed in. If that copy cannot be
      refreshed for STALE_AFTER seconds, tokens are refused with a 503 until it can.
    - POST /auth/token signs in, DELETE /auth/token signs out (routes.py); failed sign-ins are
      throttled (throttle.py).
    """

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        token_ttl: float = 3600.0,
        passwords: Passwords | None = None,
        throttle: Throttle | None = None,
        unverified_may_sign_in: bool = True,
    ) -> None:
        self._secrets = list(secrets)
        # False: a user signs in only once their address is verified (heaven_plugins.signin.accounts).
        self.unverified_may_sign_in = unverified_may_sign_in
        self.ttl = token_ttl
        self.passwords = passwords or Passwords()
        self.throttle = throttle or Throttle()
        self.revocations = Revocations(token_ttl)
        self.guard = Guard(self.revocations)
        self.tokens: Tokens | None = None  # made at startup, which refuses a missing or short secret
        self.db = None  # the Postgres plugin, found at startup
        self._expiry: asyncio.TimerHandle | None = None
        self._refresher: asyncio.Task | None = None

    def install(self, app) -> None:
        """Guard `app`'s routes from now on, put the plugin on every request's context, register
        POST and DELETE /auth/token, answer sign-in's refusals (busy: 503, throttled: 429), and read
        the revocations from startup to shutdown."""
        app.guard(self.guard.rule)
        app.keep(AUTH.name, self)
        app.provide(AUTH.name, self)
        app.answer(PasswordsBusy, answer_busy)
        app.answer(TooManyAttempts, answer_too_many_attempts)
        app.ON("startup", self.startup)
        app.ON("shutdown", self.shutdown)
        app.POST("/auth/token", create_token)
        app.DELETE("/auth/token", delete_token)

    async def startup(self, app) -> None:
        """Check the secret, read every revocation in force, and keep reading them every second;
        a secret missing or short stops the app from starting."""
        try:
            self.tokens = self.guard.tokens = Tokens(self._secrets, self.ttl)
        except ValueError as exc:
            make = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            raise RuntimeError(f"{exc}; make one with: {make}") from None
        self.db = postgres_of(app)
        if self.db is None:
            raise RuntimeError("Auth needs the Postgres plugin installed before it")
        await self.passwords.start()
        try:
            await self.revocations.refresh(self.db)
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

    async def check_password(self, db, email: str, password: str, address: str) -> asyncpg.Record | None:
        """The user row if `password` is theirs and they are active, else None; throttled
        (TooManyAttempts, answered 429).

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

    async def _keep_fresh(self) -> None:
        failing = self.guard.stale
        loop = asyncio.get_running_loop()
        housekeeping = loop.time() + HOUSEKEEPING_EVERY
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            try:
                async with asyncio.timeout(STALE_AFTER):
                    await self.revocations.refresh(self.db)
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
        self.guard.stale = False
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(STALE_AFTER, self._go_stale)

    def _go_stale(self) -> None:
        self.guard.stale = True
        log.error("token revocations not read for %s s: refusing tokens (503) until Postgres answers", STALE_AFTER)

    async def _sweep(self) -> None:
        self.revocations.forget_expired(time.time())
        try:
            async with asyncio.timeout(STALE_AFTER):
                await self.db.execute(DELETE_EXPIRED_REVOCATIONS, self.ttl)
                await self.throttle.sweep(self.db)
        except Exception as exc:  # a read-only or busy database: the rows wait for the next sweep
            log.info("could not sweep expired revocations and failures: %s", type(exc).__name__)


def answer_busy(exc: PasswordsBusy) -> HTTPError:
    """PasswordsBusy as HTTP: 503, and `Retry-After` says when the work now waiting is done."""
    seconds = exc.retry_after
    detail = f"too many passwords to hash right now; try again in {seconds} s"
    return HTTPError(503, "busy", detail, headers=(("Retry-After", str(seconds)),))


def answer_too_many_attempts(exc: TooManyAttempts) -> HTTPError:
    """TooManyAttempts as HTTP: 429, and `Retry-After` says when a count falls under its limit."""
    seconds = exc.retry_after
    detail = f"too many failed sign-ins; try again in {seconds} s"
    return HTTPError(429, "too_many_attempts", detail, headers=(("Retry-After", str(seconds)),))


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, DatabaseUnavailable) else explain(exc)
