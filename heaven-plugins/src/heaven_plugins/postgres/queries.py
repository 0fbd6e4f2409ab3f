"""fetch, fetchrow, fetchval and execute, with rows bound to Structs: on a borrowed connection or a held one."""

from typing import Any, overload

import asyncpg

from .rows import S, bind_rows


class Querying:
    """fetch, fetchrow, fetchval and execute, with rows bound to Structs, over `_run`, which runs
    one asyncpg Connection method: on a held connection (Queries) or a borrowed one (Postgres)."""

    __slots__ = ()

    async def _run(self, method: str, query: str, args: tuple, **options: Any) -> Any:
        raise NotImplementedError

    @overload
    async def fetch(self, query: str, *args: Any, bind: type[S]) -> list[S]: ...
    @overload
    async def fetch(self, query: str, *args: Any, bind: None = None) -> list[asyncpg.Record]: ...
    async def fetch(self, query, *args, bind=None):
        """All rows, as a list of `bind` Structs when given (validated), else asyncpg Records."""
        rows = await self._run("fetch", query, args)
        return bind_rows(rows, bind) if bind else rows

    @overload
    async def fetchrow(self, query: str, *args: Any, bind: type[S]) -> S | None: ...
    @overload
    async def fetchrow(self, query: str, *args: Any, bind: None = None) -> asyncpg.Record | None: ...
    async def fetchrow(self, query, *args, bind=None):
        """The first row or None, as a `bind` Struct when given."""
        row = await self._run("fetchrow", query, args)
        return bind_rows((row,), bind)[0] if bind and row is not None else row

    async def fetchval(self, query: str, *args: Any, column: int = 0) -> Any:
        """One value of the first row, or None when there is no row."""
        return await self._run("fetchval", query, args, column=column)

    async def execute(self, query: str, *args: Any) -> str:
        """Run a statement; returns its status, such as "DELETE 1"."""
        return await self._run("execute", query, args)


class Queries(Querying):
    """fetch, fetchrow, fetchval and execute on one asyncpg connection, with rows bound to Structs."""

    __slots__ = ("_conn", "_timeout")

    def __init__(self, conn: asyncpg.Connection, timeout: float | None) -> None:
        self._conn, self._timeout = conn, timeout

    async def _run(self, method: str, query: str, args: tuple, **options: Any) -> Any:
        return await getattr(self._conn, method)(query, *args, timeout=self._timeout, **options)
