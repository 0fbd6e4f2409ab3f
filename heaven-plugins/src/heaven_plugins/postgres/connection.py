"""asyncpg's connection, given back to the pool without the reset query unless its session may have changed."""

import functools
import re

import asyncpg

# What a statement may leave on its session past its transaction, which the reset query undoes (RESET ALL,
# UNLISTEN *, CLOSE ALL, pg_advisory_unlock_all()): a setting (SET, set_config), a LISTEN, a cursor held open
# (DECLARE), a session's advisory lock, or whatever DO or CALL runs. A word test, not a parser: it errs towards a
# reset (an UPDATE's SET gets one), and a function of yours that sets session state unseen needs db.connection().
SESSION_WORDS = re.compile(r"\b(?:set|set_config|listen|declare|do|call|\w*advisory\w*)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)  # queries are mostly constants: each is read once
def changes_session(query: str) -> bool:
    """Whether `query` may change its session beyond its transaction (SESSION_WORDS)."""
    return SESSION_WORDS.search(query) is not None


class Connection(asyncpg.Connection):
    """asyncpg's connection, given back to the pool without the reset query's round trip unless its
    session may have changed: a query that changes_session(), or a `connection()` block.

    asyncpg resets every connection given back: it rolls back a transaction left open (no round trip
    when there is none), then sends the reset query. For the one statement of a fetch(), which
    leaves nothing on the session, that round trip was 14 % of a request's time (heaven-pg's bench/README.md).
    psycopg's pool and SQLAlchemy's do no such reset either, and PgBouncer in transaction mode keeps
    no session state across transactions in any case.
    """

    session_changed = False

    def change_session(self) -> None:
        """Reset this connection before it goes back to the pool (the pool hands out proxies, which
        pass method calls on but take no attributes)."""
        self.session_changed = True

    def get_reset_query(self) -> str:
        # asyncpg's Connection.reset(), on release, runs what this returns, when it is not empty.
        if not self.session_changed:
            return ""
        self.session_changed = False
        return super().get_reset_query()
