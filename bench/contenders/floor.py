"""The floor: raw.py's app, with each connection given back to the pool without asyncpg's reset round trip (the
least any service on this stack does for a request; the baked service skips that reset too, when a query leaves
nothing on its session)."""

import asyncpg
from raw import make


class Unreset(asyncpg.Connection):
    def get_reset_query(self) -> str:
        # asyncpg's release runs this query when it is not empty (and rolls back a transaction left open).
        return ""


app = make(Unreset)
