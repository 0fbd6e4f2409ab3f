"""The throttle on failed sign-ins: counts in Postgres that every process shares, and the SQL that keeps them."""

from msgspec import Struct

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

# A limit no client is told of (Throttle.spend): a count under a key of its own with address 'cap', in a window that
# sign_in_lock (0003_sign_in_counts.sql) starts again once it passed, locked until the transaction ends.
LOCK_CAP = "SELECT failures, window_left FROM sign_in_lock($1, 'cap', $2)"
SPEND_CAP = "UPDATE sign_in_counts SET failures = failures + 1 WHERE account = $1 AND address = 'cap'"


class TooManyAttempts(Exception):
    """A count of failed sign-ins is at its limit: try again in `retry_after` seconds (the plugin answers 429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; try again in {retry_after} s")
        self.retry_after = retry_after


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
        """Admit a sign-in attempt, or raise TooManyAttempts if a count is at its limit. Settle what
        it returns with `settle`, whatever the outcome."""
        account, known, retry_after = await db.fetchrow(
            ADMIT_ATTEMPT, email, address, self.per_email, self.per_address, self.window, self.known_for
        )
        if retry_after is not None:
            raise TooManyAttempts(max(1, round(retry_after)))
        return Attempt(account, address, known)

    async def settle(self, db, attempt: Attempt, succeeded: bool | None) -> None:
        """Count a failure, or forgive this address's failures and remember it as the account's; None
        (the password was never checked) counts neither."""
        await db.execute(SETTLE_ATTEMPT, attempt.account, attempt.address, attempt.known, succeeded)

    async def spend(self, db, key: str, limit: int) -> float | None:
        """Count one against `key`'s `limit` within the window, in `db`'s transaction: None if the count was under
        it (one more now), else the seconds until the window ends (nothing counted). Swept with the others."""
        used, left = await db.fetchrow(LOCK_CAP, key, self.window)
        if used >= limit:
            return max(1.0, left)
        await db.execute(SPEND_CAP, key)
        return None

    async def sweep(self, db) -> None:
        """Delete the counts whose window has passed, and the addresses not signed in from for `known_for`."""
        await db.execute(DELETE_OLD_COUNTS, self.window)
        await db.execute(DELETE_OLD_KNOWN, self.known_for)
        await db.execute(DELETE_OLD_FAILURES, self.window)
