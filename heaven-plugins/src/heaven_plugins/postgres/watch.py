"""Probes over a connection of the plugin's own: one at a time, shared by every check(), and, while
anything is wrong, one every WATCH_INTERVAL until it ends."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg

from .errors import LOGIN_REFUSED, explain
from .keepalive import keep_alive
from .outage import Outages

# What /health and the outage watch ask, over a connection of their own: "on" on a read-only server.
READ_ONLY = "SELECT current_setting('transaction_read_only')"
# Server processes of connections dropped mid-query, which may still run it or wait on a lock holding a
# connection slot: a cancel request would have stopped them, but it waits on the network too.
TERMINATE_STRAYS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE pid = ANY($1::int[]) AND usename = current_user AND pid <> pg_backend_pid()
"""
PROBE_TIMEOUT = 2.0  # seconds for that trivial query: a database that cannot answer it is not answering
WATCH_INTERVAL = 0.5  # seconds between probes while an outage is on


class Watch:
    """Asks the database how it is (`check`) and tells `outages` what it found; while `outages` has
    anything wrong, probes every WATCH_INTERVAL to see it end. A probe also ends the server processes
    of the connections dropped since the last (`strays`, filled by the Lender)."""

    def __init__(
        self,
        dsn: str,
        connect_timeout: float,
        tcp_user_timeout: float | None,
        outages: Outages,
        strays: list[int],
        connect: Callable[..., Awaitable[asyncpg.Connection]] = asyncpg.connect,
    ) -> None:
        self._dsn = dsn
        self._connect = connect  # asyncpg's, or Hosts.connect for several hosts
        self._connect_timeout = connect_timeout
        self._tcp_user_timeout = tcp_user_timeout
        self._outages = outages
        self._strays = strays
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False  # from the plugin's startup to its shutdown: no watch begins after it
        self._prober: asyncpg.Connection | None = None  # the connection of check() and the watch
        self._probing: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        # host:port of the server the probe last reached: with several hosts in the DSN, the primary.
        self.primary: str | None = None
        self.failovers = 0  # times the probe found the primary at another address than before

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin to watch, on `loop` (the plugin's startup)."""
        self._loop, self._running = loop, True

    async def stop(self) -> None:
        """Cancel the watch and the probe, and close the probe's connection (the plugin's shutdown)."""
        self._running = False
        for task in (self._watcher, self._probing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._drop_prober()  # it runs no query now: nothing to wait for

    async def check(self, within: float) -> str:
        """Ask the database, within `within` seconds: "ok", "read_only" or "unreachable"."""
        probing = self._probing
        if probing is None:
            probing = self._probing = self._loop.create_task(self._probe())
        try:
            # Shielded: a caller giving up leaves the probe to finish for the others.
            async with asyncio.timeout(within):
                return await asyncio.shield(probing)
        except TimeoutError:
            return "unreachable"

    def watch(self) -> None:
        """While anything is wrong, one task probes every WATCH_INTERVAL to see it end (not after shutdown began)."""
        if self._watcher is None and self._running and self._outages.any:
            self._watcher = self._loop.create_task(self._watching())

    def floor_failed(self, exc: BaseException) -> None:
        """The pool failed to reconnect in the background: an outage, perhaps, that a probe confirms."""
        if self._running:
            self._outages.suspect(exc)

    async def _watching(self) -> None:
        try:
            while self._outages.any:
                await self.check(within=PROBE_TIMEOUT + self._connect_timeout)
                if self._outages.any:
                    await asyncio.sleep(WATCH_INTERVAL)
        finally:
            self._watcher = None

    async def _probe(self) -> str:
        # One probe at a time, shared by every check() meanwhile.
        try:
            outage = self._outages.outage
            if outage is not None and outage.reason.startswith(LOGIN_REFUSED):
                # A refused login (a rotated password) spares the connections opened before it: the outage
                # ends only when a new connection is let in, as the pool's must be.
                self._drop_prober()
            while True:
                kept = self._prober is not None and not self._prober.is_closed()
                try:
                    read_only = await self._ask()
                except (Exception, asyncio.CancelledError) as exc:
                    self._drop_prober()
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    if kept and not isinstance(exc, TimeoutError):
                        continue  # the connection kept from before failed (a restart ended it): ask on a new one
                    self._outages.found("unreachable", explain(exc))
                    return "unreachable"
                state = "read_only" if read_only == "on" else "ok"
                self._outages.found(state, "")
                return state
        finally:
            self._probing = None

    async def _ask(self) -> str:
        if self._prober is None or self._prober.is_closed():
            prober = await self._connect(self._dsn, timeout=self._connect_timeout, statement_cache_size=0)
            keep_alive(prober, self._tcp_user_timeout)
            self._prober = prober
            self.reached(prober)
        read_only = await self._prober.fetchval(READ_ONLY, timeout=PROBE_TIMEOUT)
        if self._strays:
            strays = self._strays[:]
            await self._prober.execute(TERMINATE_STRAYS, strays, timeout=PROBE_TIMEOUT)
            del self._strays[: len(strays)]
        return read_only

    def reached(self, conn: asyncpg.Connection) -> None:
        """`conn` reached the primary (the startup's first connection, a new probe): where is it?"""
        # asyncpg keeps the address it connected to: of several hosts (target_session_attrs=read-write),
        # the one that is primary. Another address than the last probe's is a failover, told in the
        # WARNING that ends the outage. Behind PgBouncer or a Service this is their address, and stays.
        address = conn._addr
        server = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        if self.primary is not None and server != self.primary:
            self.failovers += 1
            self._outages.moved(self.primary, server)
        self.primary = server

    def _drop_prober(self) -> None:
        if self._prober is not None:
            self._prober.terminate()
            self._prober = None
