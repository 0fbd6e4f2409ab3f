"""Accounts that recover, the plugin: links that verify an address or reset a password, single-use and expiring,
kept hashed, and mailed by the worker."""

import hashlib
import logging
import secrets
from urllib.parse import quote

from ..jobs import Handler, Job, enqueue
from ..mail import enqueue_mail, mask
from ..web import HTTPError
from .keys import ACCOUNTS
from .throttle import Throttle, TooManyAttempts

log = logging.getLogger(__name__)

VERIFY, RESET = "verify", "reset"  # a token's purpose, and the name of its mail template
RESET_JOB = "auth.password-reset"  # the worker's job: look the address up, and mail a link if it is a user's

# A new token; the user's tokens that have expired go at the same time, so the table holds live ones.
INSERT_LINK = """
WITH swept AS (DELETE FROM account_tokens WHERE user_id = $3 AND expires_at < now())
INSERT INTO account_tokens (hash, purpose, user_id, email, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
"""
# Using a token deletes it: of two requests with one token, one gets the row. An expired one is refused.
USE_LINK = """
DELETE FROM account_tokens WHERE hash = $1 AND purpose = $2 RETURNING user_id, email, expires_at > now() AS live
"""
SELECT_LIVE_LINK = "SELECT user_id FROM account_tokens WHERE hash = $1 AND purpose = $2 AND expires_at > now()"
# The address must still be the one the link went to (the trigger voids links when it changes).
MARK_VERIFIED = "UPDATE users SET is_verified = true WHERE id = $1 AND lower(email) = lower($2) AND is_active"
# A reset proves the user reads mail at the address it went to: that verifies it too.
APPLY_RESET = """
UPDATE users SET password_hash = $2, is_verified = is_verified OR lower(email) = lower($3)
WHERE id = $1 AND is_active RETURNING id
"""
SELECT_RESETTABLE = "SELECT id, email FROM users WHERE lower(email) = lower($1) AND is_active"


def token_hash(token: str) -> bytes:
    """What the table keeps of a token: its SHA-256 (a token is 256 random bits, so no salt or stretching)."""
    return hashlib.sha256(token.encode()).digest()


def invalid_token() -> HTTPError:
    """The one answer for a link's token that is unknown, used already, expired, or voided by a change."""
    return HTTPError(400, "invalid_token", "the link is invalid, expired or used already", "token")


class Accounts:
    """The plugin: `app.plugin(Accounts(public_url, ...))`, after Auth and the jobs plugin. Adds the public
    routes POST /auth/verify, POST /auth/password-reset and POST /auth/password-reset/complete (routes in
    account_routes.py), and on every request's context `ACCOUNTS`, whose `send_verification` a sign-up
    calls inside its transaction.

    Links are `public_url` + `/verify?token=...` and `/reset-password?token=...`: pages of the project's
    front end, which POST the token back. A verification link lives `verify_ttl` seconds, a reset link
    `reset_ttl`. Requests for a reset are counted by `throttle` (its own counts, not sign-in's).

    The worker runs the reset job: `worker.job(RESET_JOB, accounts.reset_job())`, with the same settings.
    """

    def __init__(
        self,
        public_url: str,
        *,
        verify_ttl: float = 3 * 86400.0,
        reset_ttl: float = 3600.0,
        throttle: Throttle | None = None,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.verify_ttl, self.reset_ttl = verify_ttl, reset_ttl
        self.throttle = throttle or Throttle(per_email=3, per_address=20, window=900.0)

    def install(self, app) -> None:
        """Register the three routes, and put the plugin on every request's context."""
        from .account_routes import complete_reset, request_reset, verify_address

        app.keep(ACCOUNTS.name, self)
        app.provide(ACCOUNTS.name, self)
        app.POST("/auth/verify", verify_address)
        app.POST("/auth/password-reset", request_reset)
        app.POST("/auth/password-reset/complete", complete_reset)

    async def send_verification(self, tx, user_id: int, email: str) -> None:
        """Mail `email` a link that verifies it, in `tx`'s transaction (a sign-up's, an address change's)."""
        await self._issue(tx, VERIFY, user_id, email, "/verify", self.verify_ttl)

    async def request_reset(self, db, email: str, address: str) -> None:
        """Queue a reset for `email`, whether it is a user's or not: the same statements either way, so the
        answer takes the same time. TooManyAttempts past the throttle's counts."""
        # Keys of their own ("reset:"), so that asking for resets never counts against signing in.
        attempt = await self.throttle.attempt(db, f"reset:{email}", f"reset:{address}")
        await self.throttle.settle(db, attempt, False)  # every request counts, as a failed sign-in does
        async with db.transaction() as tx:
            await enqueue(tx, RESET_JOB, {"email": email})

    def reset_job(self) -> Handler:
        """The worker's handler of RESET_JOB: a link to the user of that address, or nothing at all."""

        async def mail_reset_link(job: Job) -> None:
            async with job.db.acquire() as conn, conn.transaction():
                user = await conn.fetchrow(SELECT_RESETTABLE, job.payload["email"])
                if user is None:
                    log.info("password reset asked for %s: no active user, no mail", mask(job.payload["email"]))
                    return
                await self._issue(conn, RESET, user["id"], user["email"], "/reset-password", self.reset_ttl)

        return mail_reset_link

    async def verify(self, db, token: str) -> None:
        """Mark the address the token was sent to verified; HTTPError 400 for a token that is not live."""
        async with db.transaction() as tx:
            row = await tx.fetchrow(USE_LINK, token_hash(token), VERIFY)
            if row is None or not row["live"] or await tx.execute(MARK_VERIFIED, row[0], row[1]) == "UPDATE 0":
                raise invalid_token()
        log.info("user %s verified their address", row["user_id"])

    async def check_reset(self, db, token: str) -> None:
        """HTTPError 400 unless the reset token is live: checked before a password is hashed for it."""
        if await db.fetchval(SELECT_LIVE_LINK, token_hash(token), RESET) is None:
            raise invalid_token()

    async def reset(self, db, token: str, password_hash: str) -> int:
        """Use the reset token: the user's password becomes `password_hash`, and every token they were
        issued is void (VOID_USER_TOKENS, read by every process within 5 s); returns their id."""
        from .tokens import VOID_USER_TOKENS

        async with db.transaction() as tx:
            row = await tx.fetchrow(USE_LINK, token_hash(token), RESET)
            if row is None or not row["live"] or await tx.fetchval(APPLY_RESET, row[0], password_hash, row[1]) is None:
                raise invalid_token()
            await tx.execute(VOID_USER_TOKENS, row["user_id"])
        log.info("user %s reset their password: every token of theirs is void", row["user_id"])
        return row["user_id"]

    async def _issue(self, db, purpose: str, user_id: int, email: str, page: str, ttl: float) -> None:
        token = secrets.token_urlsafe(32)
        await db.execute(INSERT_LINK, token_hash(token), purpose, user_id, email, ttl)
        link = f"{self.public_url}{page}?token={quote(token)}"
        values = {"link": link, "email": email, "hours": round(ttl / 3600, 1)}
        await enqueue_mail(db, email, purpose, values)

    @staticmethod
    def too_many(exc: TooManyAttempts) -> HTTPError:
        """TooManyAttempts of reset requests as HTTP: 429 with `Retry-After`."""
        detail = f"too many password resets asked for; try again in {exc.retry_after} s"
        return HTTPError(429, "too_many_requests", detail, headers=(("Retry-After", str(exc.retry_after)),))
