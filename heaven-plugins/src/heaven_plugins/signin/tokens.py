"""Access tokens: signed and read in-process, and checked against the revocations every process reads from Postgres."""

import logging
import secrets
from collections.abc import Sequence
from hashlib import blake2b
from hmac import compare_digest

from msgspec import Struct

log = logging.getLogger(__name__)

# A token signs out (DELETE /auth/token): it is refused until it would have expired anyway.
INSERT_REVOCATION = """
INSERT INTO revoked_tokens (token_id, issued_at) VALUES ($1, to_timestamp($2)) ON CONFLICT DO NOTHING
"""
# Every token of one user issued until now is void: their password changed. (Deactivating,
# deleting, and making or unmaking an admin do the same in a trigger of the users table.)
VOID_USER_TOKENS = """
INSERT INTO token_cutoffs (user_id, issued_before) VALUES ($1, clock_timestamp())
ON CONFLICT (user_id) DO UPDATE SET issued_before = excluded.issued_before, xid = excluded.xid
"""
# What was written since the last read: rows of transactions that were still running then have
# an xid at or above that read's xmin, the oldest transaction its snapshot saw running; every
# other row was visible to it already. One statement, so one snapshot for the rows and the xmin.
# Rows older than the token lifetime void nothing that has not expired anyway.
SELECT_REVOCATIONS = """
SELECT 'token' AS kind, token_id AS key, extract(epoch FROM issued_at)::float8 AS at
FROM revoked_tokens WHERE xid >= $1::text::xid8 AND issued_at > now() - make_interval(secs => $2)
UNION ALL
SELECT 'user', user_id::text, extract(epoch FROM issued_before)::float8
FROM token_cutoffs WHERE xid >= $1::text::xid8 AND issued_before > now() - make_interval(secs => $2)
UNION ALL
SELECT 'xmin', pg_snapshot_xmin(pg_current_snapshot())::text, NULL
"""
SELECT_CUTOFF = "SELECT extract(epoch FROM issued_before)::float8 FROM token_cutoffs WHERE user_id = $1"
DELETE_EXPIRED_REVOCATIONS = "DELETE FROM revoked_tokens WHERE issued_at < now() - make_interval(secs => $1)"


class Principal(Struct, frozen=True, gc=False):
    """Who a request's token says signed in: `ctx.peek(USER)` on every route that needs a token."""

    id: int
    is_admin: bool
    issued_at: float  # seconds since the epoch, Postgres's clock at sign-in
    token_id: str


class Tokens:
    """Signs `Principal`s into bearer tokens, and reads them back. A token is its claims in plain
    text, `user id.admin (0 or 1).issued at (µs since the epoch).token id`, a dot, and the keyed
    BLAKE2b-256 of that text in hex, keyed by a key derived from the secret for tokens alone.

    A token lives `ttl` seconds from its issue, whatever the TTL was when it was made. The first
    secret signs; each secret verifies, so a new one can be put first while tokens signed with
    the old one still work until they expire.

    Not Heaven's SecureSerializer, itsdangerous or PyJWT, though each does the job, and not HMAC:
    every request reads a token. SecureSerializer's loads() (a key derived each call, base64,
    JSON) measured 83k instructions a request, 10.7% of an admin's GET /users?limit=20;
    itsdangerous took twice its time and PyJWT five times; OpenSSL's HMAC-SHA256 alone is 24k
    instructions a call, keyed BLAKE2b (the standard library's own C, made to be used as a MAC)
    7k. And an Authorization header read once is remembered whole (up to REMEMBERED of them), so that
    the next request with it skips the signature, and the scheme and token cut out of it: 16k
    instructions the first time, 1.5k after. Expiry is checked every time, and revocation by the
    caller. bench/signin.py measures what the check costs.
    """

    REMEMBERED = 4096  # headers whose token's signature was checked already, per process (about 1 MiB)

    def __init__(self, secrets_: Sequence[str], ttl: float) -> None:
        if not secrets_:
            raise ValueError("TOKEN_SECRET is not set")
        if any(len(secret) < 32 for secret in secrets_):
            raise ValueError("TOKEN_SECRET must be at least 32 characters (several are comma-separated)")
        self.ttl = ttl
        # One key per secret, for tokens alone (personalized): a secret used elsewhere signs nothing here.
        self._keys = [blake2b(secret.encode(), digest_size=32, person=b"access-token").digest() for secret in secrets_]
        self._read: dict[str, Principal] = {}

    def issue(self, user_id: int, is_admin: bool, issued_at: float) -> tuple[str, Principal]:
        """A new token for the user, with a fresh random id to revoke it by."""
        issued_us = round(issued_at * 1_000_000)
        principal = Principal(user_id, is_admin, issued_us / 1_000_000, secrets.token_urlsafe(12))
        claims = f"{user_id}.{int(is_admin)}.{issued_us}.{principal.token_id}"
        return f"{claims}.{blake2b(claims.encode(), key=self._keys[0], digest_size=32).hexdigest()}", principal

    def bearer(self, authorization: str, now: float) -> Principal | None:
        """The principal an `Authorization` header's bearer token names (the scheme in any case, RFC 9110),
        or None if it is not one of ours or has expired."""
        principal = self._read.get(authorization)
        if principal is None:
            if authorization[:7].lower() != "bearer ":
                return None
            principal = self._verify(authorization[7:])
            if principal is None:
                return None
            if len(self._read) >= self.REMEMBERED:  # the simplest bound: start again
                self._read.clear()
            self._read[authorization] = principal
        return principal if principal.issued_at + self.ttl > now else None

    def read(self, token: str, now: float) -> Principal | None:
        """The principal a token names, or None if it is not one of ours or has expired."""
        principal = self._verify(token)
        return principal if principal is not None and principal.issued_at + self.ttl > now else None

    def refusal(self, token: str, now: float) -> str:
        """Why `read` refuses a token, in words for a log: it names no part of the token."""
        claims, _, signature = token.rpartition(".")
        parts = claims.split(".")
        well_formed = len(parts) == 4 and all(part.isascii() and part.isdigit() for part in parts[:3])
        if not well_formed or len(signature) != 64:
            return f"malformed (not one of ours: {len(token)} characters)"
        principal = self._verify(token)
        if principal is None:
            return "bad signature (altered, or signed with a secret no longer in TOKEN_SECRET)"
        if principal.issued_at + self.ttl <= now:
            return f"expired {now - principal.issued_at - self.ttl:.0f} s ago (user {principal.id})"
        return "accepted"

    def _verify(self, token: str) -> Principal | None:
        claims, _, signature = token.rpartition(".")
        if not signature.isascii():  # compare_digest compares ASCII strings only
            return None
        message = claims.encode()
        for key in self._keys:
            if compare_digest(blake2b(message, key=key, digest_size=32).hexdigest(), signature):
                break
        else:  # altered, truncated, or signed with another secret
            return None
        user_id, is_admin, issued_us, token_id = claims.split(".")  # our own text: the signature says so
        return Principal(int(user_id), is_admin == "1", int(issued_us) / 1_000_000, token_id)


class Revocations:
    """The revoked tokens and the per-user cutoffs, as Postgres had them at the last `refresh`."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.tokens: dict[str, float] = {}  # token id: when it was issued
        self.cutoffs: dict[int, float] = {}  # user id: tokens issued before this are void
        self._xmin = "0"  # the first read takes everything still in force

    def voids(self, principal: Principal) -> bool:
        """Whether the token was signed out, or its user changed since it was issued."""
        return principal.token_id in self.tokens or self.cutoffs.get(principal.id, 0.0) > principal.issued_at

    async def refresh(self, db) -> int:
        """Read what changed since the last refresh; returns how many rows that was."""
        rows = await db.fetch(SELECT_REVOCATIONS, self._xmin, self.ttl)
        for kind, key, at in rows:
            if kind == "token":
                self.tokens[key] = at
            elif kind == "user":
                user_id = int(key)
                self.cutoffs[user_id] = max(at, self.cutoffs.get(user_id, 0.0))
            else:
                self._xmin = key
        return len(rows) - 1

    async def refresh_user(self, db, user_id: int) -> None:
        """Read one user's cutoff now, after a change that voids their tokens: this process
        refuses them at once, the others at their next refresh."""
        at = await db.fetchval(SELECT_CUTOFF, user_id)
        if at is not None:
            self.cutoffs[user_id] = max(at, self.cutoffs.get(user_id, 0.0))

    def forget_expired(self, now: float) -> None:
        """Drop what voids only tokens that have expired by now, to keep memory flat."""
        horizon = now - self.ttl
        self.tokens = {key: at for key, at in self.tokens.items() if at > horizon}
        self.cutoffs = {key: at for key, at in self.cutoffs.items() if at > horizon}

    def revoke(self, principal: Principal) -> None:
        """Refuse a token in this process at once (other processes read it from Postgres)."""
        self.tokens[principal.token_id] = principal.issued_at
