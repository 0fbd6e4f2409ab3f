"""Accounts that recover, the plugin: links that verify an address, reset a password or change the address,
single-use and expiring, kept hashed, and mailed by the worker."""

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

# A token's purpose; the first two are the names of their mail templates too.
VERIFY, RESET, CHANGE = "verify", "reset", "email"
CHANGE_MAIL, CHANGED_MAIL = "email-change", "email-changed"  # the link to the new address, the notice to the old
RESET_JOB = "auth.password-reset"  # the worker's job: look the address up, and mail a link if it is a user's
RESEND_JOB = "auth.verify-resend"  # the same for a new verification link, if the address is an unverified user's

# A new token; the user's tokens that have expired go at the same time, so the table holds live ones.
INSERT_LINK = """
WITH swept AS (DELETE FROM account_tokens WHERE user_id = $3 AND expires_at < now())
INSERT INTO account_tokens (hash, purpose, user_id, email, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
"""
# The user of a link, their row locked before the link is used: every flow that uses a link and changes the user
# (whose trigger deletes links) locks the row first, as an UPDATE of it does, so two of them wait, never deadlock.
LOCK_LINK_USER = """
SELECT u.id, u.email FROM account_tokens t JOIN users u ON u.id = t.user_id
WHERE t.hash = $1 AND t.purpose = $2 AND u.is_active FOR UPDATE OF u
"""
# Using a token deletes it: of two requests with one token, one gets the row. An expired one is refused.
USE_LINK = """
DELETE FROM account_tokens WHERE hash = $1 AND purpose = $2 RETURNING user_id, email, expires_at > now() AS live
"""
SELECT_LIVE_LINK = "SELECT user_id FROM account_tokens WHERE hash = $1 AND purpose = $2 AND expires_at > now()"
# The address must still be the one the link went to (the trigger voids links when it changes).
MARK_VERIFIED = "UPDATE users SET is_verified = true WHERE id = $1 AND lower(email) = lower($2) AND is_active"
# Only while the address is still the one the link went to (the trigger voids links when it changes; this is
# the second guard). A reset proves the user reads mail at that address: that verifies it too.
APPLY_RESET = """
UPDATE users SET password_hash = $2, is_verified = true
WHERE id = $1 AND is_active AND lower(email) = lower($3) RETURNING id
"""
# Locked, as LOCK_LINK_USER's is, before the job deletes the user's links (old ones, or the one it replaces).
SELECT_RESETTABLE = "SELECT id, email FROM users WHERE lower(email) = lower($1) AND is_active FOR UPDATE"
SELECT_UNVERIFIED = """
SELECT id, email FROM users WHERE lower(email) = lower($1) AND is_active AND NOT is_verified FOR UPDATE
"""
# A user has one live link of a kind that a new one replaces: the one mailed last is the one that works.
VOID_LINKS = "DELETE FROM account_tokens WHERE user_id = $1 AND purpose = $2"
SELECT_EMAIL = "SELECT email FROM users WHERE id = $1"
SELECT_TAKEN = "SELECT EXISTS (SELECT FROM users WHERE lower(email) = lower($1))"
# The row is locked until the change commits: the address the notice goes to is the one that was replaced.
SELECT_CHANGING = "SELECT email FROM users WHERE id = $1 AND is_active FOR UPDATE"
# The trigger voids the user's other links and clears is_verified as the address changes; the link proved the new
# address, which the second statement records (a BEFORE trigger cannot tell that from an UPDATE that keeps it).
APPLY_CHANGE = "UPDATE users SET email = $2 WHERE id = $1"
MARK_USER_VERIFIED = "UPDATE users SET is_verified = true WHERE id = $1"


def token_hash(token: str) -> bytes:
    """What the table keeps of a token: its SHA-256 (a token is 256 random bits, so no salt or stretching)."""
    return hashlib.sha256(token.encode()).digest()


def invalid_token() -> HTTPError:
    """The one answer for a link's token that is unknown, used already, expired, or voided by a change."""
    return HTTPError(400, "invalid_token", "the link is invalid, expired or used already", "token")


def no_account() -> HTTPError:
    """The answer to a token whose user was deleted or deactivated a moment ago (the token stops working soon)."""
    return HTTPError(404, "not_found", "the user of this token no longer exists")


class Accounts:
    """The plugin: `app.plugin(Accounts(public_url, ...))`, after Auth and the jobs plugin. Adds the public
    routes POST /auth/verify, POST /auth/verify/resend, POST /auth/password-reset and its /complete, and POST
    /auth/email-change/complete, the signed-in POST /auth/email-change (routes in account_routes.py), and on
    every request's context `ACCOUNTS`, whose `send_verification` a sign-up calls inside its transaction.

    Links are `public_url` + `/verify?token=...`, `/reset-password?token=...` and `/change-email?token=...`:
    pages of the project's front end, which POST the token back. A verification link lives `verify_ttl`
    seconds, a reset link `reset_ttl`, an address change's `change_ttl`. Requests for a link are counted by
    `throttle` (its own counts, not sign-in's), each kind apart: a reset or a verification link per address
    and client (429 past `per_email`) and per client (`per_address`), never per address alone, so nobody can
    get the owner's own requests refused; an address change per user. What one address is mailed is capped
    instead: at most `mail_limit` links of a kind within the throttle's window, past which the worker sends
    nothing (logged at INFO), and as many address changes to it, past which a change is 429.

    The worker runs the jobs that look an address up: `accounts.register(worker)`, with the same settings.
    """

    def __init__(
        self,
        public_url: str,
        *,
        verify_ttl: float = 3 * 86400.0,
        reset_ttl: float = 3600.0,
        change_ttl: float = 86400.0,
        throttle: Throttle | None = None,
        mail_limit: int = 10,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.verify_ttl, self.reset_ttl, self.change_ttl = verify_ttl, reset_ttl, change_ttl
        self.throttle = throttle or Throttle(per_email=3, per_address=20, window=900.0)
        self.mail_limit = mail_limit

    def install(self, app) -> None:
        """Register the routes, and put the plugin on every request's context."""
        from . import account_routes as routes

        app.keep(ACCOUNTS.name, self)
        app.provide(ACCOUNTS.name, self)
        app.POST("/auth/verify", routes.verify_address)
        app.POST("/auth/verify/resend", routes.resend_verification)
        app.POST("/auth/password-reset", routes.request_reset)
        app.POST("/auth/password-reset/complete", routes.complete_reset)
        app.POST("/auth/email-change", routes.request_email_change)
        app.POST("/auth/email-change/complete", routes.complete_email_change)

    def register(self, worker) -> None:
        """Give `worker` the handlers of the jobs this plugin enqueues (besides the mail's, heaven_plugins.mail)."""
        worker.job(RESET_JOB, self.reset_job())
        worker.job(RESEND_JOB, self.resend_job())

    async def send_verification(self, tx, user_id: int, email: str) -> None:
        """Mail `email` a link that verifies it, in `tx`'s transaction (a sign-up's, an address change's)."""
        await self._issue(tx, VERIFY, user_id, email, "/verify", self.verify_ttl)

    async def request_reset(self, db, email: str, address: str) -> None:
        """Queue a reset for `email`, whether it is a user's or not: the same statements either way, so the
        answer takes the same time. HTTPError 429 past the throttle's counts."""
        await self.count(db, "reset", email, address)
        async with db.transaction() as tx:
            await enqueue(tx, RESET_JOB, {"email": email})

    async def resend_verification(self, db, email: str, address: str) -> None:
        """Queue a new verification link for `email`, whether it is an unverified user's or not, as a reset is."""
        await self.count(db, "verify", email, address)
        async with db.transaction() as tx:
            await enqueue(tx, RESEND_JOB, {"email": email})

    def reset_job(self) -> Handler:
        """The worker's handler of RESET_JOB: a link to the user of that address, or nothing at all."""

        async def mail_reset_link(job: Job) -> None:
            async with job.db.acquire() as conn, conn.transaction():
                user = await conn.fetchrow(SELECT_RESETTABLE, job.payload["email"])
                if user is None:
                    log.info("password reset asked for %s: no active user, no mail", mask(job.payload["email"]))
                    return
                if not await self.within_mail_limit(conn, RESET, user["email"]):
                    return
                await self._issue(conn, RESET, user["id"], user["email"], "/reset-password", self.reset_ttl)

        return mail_reset_link

    def resend_job(self) -> Handler:
        """The worker's handler of RESEND_JOB: a new link to the address of an active unverified user, which
        voids the one mailed before; or nothing at all."""

        async def mail_verification_link(job: Job) -> None:
            async with job.db.acquire() as conn, conn.transaction():
                user = await conn.fetchrow(SELECT_UNVERIFIED, job.payload["email"])
                if user is None:
                    log.info("verification asked for %s: no unverified user, no mail", mask(job.payload["email"]))
                    return
                if not await self.within_mail_limit(conn, VERIFY, user["email"]):
                    return
                await conn.execute(VOID_LINKS, user["id"], VERIFY)
                await self.send_verification(conn, user["id"], user["email"])

        return mail_verification_link

    async def verify(self, db, token: str) -> None:
        """Mark the address the token was sent to verified; HTTPError 400 for a token that is not live."""
        hashed = token_hash(token)
        async with db.transaction() as tx:
            row = await tx.fetchrow(LOCK_LINK_USER, hashed, VERIFY) and await tx.fetchrow(USE_LINK, hashed, VERIFY)
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

        hashed = token_hash(token)
        async with db.transaction() as tx:
            row = await tx.fetchrow(LOCK_LINK_USER, hashed, RESET) and await tx.fetchrow(USE_LINK, hashed, RESET)
            if row is None or not row["live"] or await tx.fetchval(APPLY_RESET, row[0], password_hash, row[1]) is None:
                raise invalid_token()
            await tx.execute(VOID_USER_TOKENS, row["user_id"])
        log.info("user %s reset their password: every token of theirs is void", row["user_id"])
        return row["user_id"]

    async def request_change(self, auth, user_id: int, email: str, password: str, address: str) -> None:
        """Mail `email` a link that makes it the address of the signed-in user whose `password` this is, voiding
        the change they asked for before. HTTPError 429 past the throttle's counts, 403 for a wrong password
        (counted as a failed sign-in by `auth`), 409 if the address is a user's already (as sign-up says), 422
        if it is theirs."""
        db = auth.db
        await self.count(db, "change", str(user_id), address)
        # Checked before the row is locked: the check reads the row FOR SHARE, and takes a hash's time.
        current = await db.fetchval(SELECT_EMAIL, user_id)
        if current is None:
            raise no_account()
        if await auth.check_password(db, current, password, address) is None:
            raise HTTPError(403, "forbidden", "current_password is not your password", "current_password")
        async with db.transaction() as tx:
            current = await tx.fetchval(SELECT_CHANGING, user_id)
            if current is None:  # deactivated or deleted since
                raise no_account()
            if current.lower() == email.lower():
                raise HTTPError(422, "invalid", "this is your address already", "email")
            if await tx.fetchval(SELECT_TAKEN, email):
                raise HTTPError(409, "conflict", "this email is taken already", "email")
            # Counted by the address mailed too, whoever asks: nobody floods a third party's inbox from many
            # accounts. A 429, not silence: the asker is signed in and knows their password, and is told why
            # no link comes; it tells nothing about the address that 409 and 422 do not.
            retry_after = await self.throttle.spend(tx, f"change-to:{email.lower()}", self.mail_limit)
            if retry_after is not None:
                raise too_many("change", round(retry_after))
            await tx.execute(VOID_LINKS, user_id, CHANGE)
            await self._issue(tx, CHANGE, user_id, email, "/change-email", self.change_ttl, CHANGE_MAIL)
        log.info("user %s asked to change their address to %s", user_id, mask(email))

    async def change(self, db, token: str) -> int:
        """Use an address change's token: the address it went to becomes the user's, verified, and the old one
        is told. HTTPError 400 for a token not live; a unique violation (answered 409) if the address became
        another user's meanwhile, which leaves the token live. Returns the user's id."""
        hashed = token_hash(token)
        async with db.transaction() as tx:
            user = await tx.fetchrow(LOCK_LINK_USER, hashed, CHANGE)  # the row locked before the link is used
            row = user and await tx.fetchrow(USE_LINK, hashed, CHANGE)
            if row is None or not row["live"]:
                raise invalid_token()
            old = user["email"]
            await tx.execute(APPLY_CHANGE, row["user_id"], row["email"])
            await tx.execute(MARK_USER_VERIFIED, row["user_id"])
            await enqueue_mail(tx, old, CHANGED_MAIL, {"email": old, "new_email": row["email"]})
        log.info("user %s changed their address", row["user_id"])
        return row["user_id"]

    async def count(self, db, kind: str, key: str, address: str) -> None:
        """Count a request for a link of `kind` (keyed by an address or a user) from a client `address`: HTTPError
        429 with `Retry-After` past the throttle's counts. Every request counts, as a failed sign-in does."""
        # Keys of their own ("reset:..."), so that asking for links never counts against signing in. A link by
        # address: its account key holds the client too, so the throttle's count for the account from every
        # address it was not signed in from (which a link request never is) is this pair's alone.
        account = f"{kind}:{key}" if kind == "change" else f"{kind}:{address}:{key}"
        try:
            attempt = await self.throttle.attempt(db, account, f"{kind}:{address}")
        except TooManyAttempts as exc:
            raise too_many(kind, exc.retry_after) from None
        await self.throttle.settle(db, attempt, False)

    async def within_mail_limit(self, conn, kind: str, email: str) -> bool:
        """Whether `email` may be mailed one more link of `kind` (counted if so), in the worker's transaction;
        past `mail_limit` within the window, it is not, and that is logged with the address masked."""
        retry_after = await self.throttle.spend(conn, f"mailed-{kind}:{email.lower()}", self.mail_limit)
        if retry_after is None:
            return True
        log.info("%s link for %s: %d mailed in the window already, no mail", kind, mask(email), self.mail_limit)
        return False

    async def _issue(
        self, db, purpose: str, user_id: int, email: str, page: str, ttl: float, template: str = ""
    ) -> None:
        token = secrets.token_urlsafe(32)
        await db.execute(INSERT_LINK, token_hash(token), purpose, user_id, email, ttl)
        link = f"{self.public_url}{page}?token={quote(token)}"
        hours = round(ttl / 3600, 1)
        values = {"link": link, "email": email, "hours": int(hours) if hours.is_integer() else hours}  # 72, not 72.0
        await enqueue_mail(db, email, template or purpose, values)


def too_many(kind: str, retry_after: int) -> HTTPError:
    """429 with Retry-After: a link of `kind` was asked for too often."""
    detail = f"too many {REQUESTS[kind]} asked for; try again in {retry_after} s"
    return HTTPError(429, "too_many_requests", detail, headers=(("Retry-After", str(retry_after)),))


# What a 429 says was asked for too often, by the kind of request.
REQUESTS = {"reset": "password resets", "verify": "verification links", "change": "address changes"}
