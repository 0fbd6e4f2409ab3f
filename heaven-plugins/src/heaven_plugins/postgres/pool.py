"""The pool's connections lent to queries: a bounded wait for one, their release, and the resets that hang."""

import asyncio
import importlib
import logging

import asyncpg

from .errors import NoConnectionFree, explain

# The package's one logger, whichever module speaks: "heaven_plugins.postgres".
log = logging.getLogger(__package__)

MAX_STRAYS = 100
SWEEP_INTERVAL = 1.0  # a reset still running at two sweeps in a row is terminated: 1-2 s
LOOP_TURNS = 8  # ... unless it ends within this many turns of the event loop (see StuckResets._terminate)


class Lender:
    """Lends the pool's connections: `acquire` waits at most acquire_timeout for one (then NoConnectionFree),
    `release` gives it back (reset if its session changed, see Connection), `drop` terminates one that may
    wait on a silent network. `waiting` holds the tasks waiting for a connection of the full pool."""

    def __init__(self, acquire_timeout: float, max_size: int) -> None:
        self.pool: asyncpg.Pool | None = None
        # The pool's loop, kept: on Python 3.11 each asyncio.get_running_loop() is a getpid system call.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._acquire_timeout = acquire_timeout
        self._max_size = max_size
        # Given back by the steps of asyncpg's pool (give_back) where its parts are asyncpg 0.32's; another
        # asyncpg's pool takes them back itself.
        self._direct = KNOWN
        self._borrowed = 0  # connections held or awaited through this plugin; the pool's own count is a loop
        # Tasks waiting for a connection, oldest first: their deadline, or None once it passed.
        self.waiting: dict[asyncio.Task, float | None] = {}
        self._expiry: asyncio.TimerHandle | None = None  # the one timer of all the waiting tasks
        self.resetting: set = set()  # connections being reset on release now (see StuckResets)
        self.strays: list[int] = []  # server processes of dropped connections, for the next probe to end

    def open(self, pool: asyncpg.Pool, loop: asyncio.AbstractEventLoop) -> None:
        """Lend the connections of `pool`, which runs on `loop`."""
        self.pool, self.loop = pool, loop

    def close(self) -> None:
        """Stop the timer of the waiting tasks (shutdown): the pool's close ends their wait."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    async def acquire(self) -> asyncpg.Connection:
        """A connection of the pool, within acquire_timeout (else NoConnectionFree)."""
        free = self._borrowed < self._max_size
        # Counted before the wait, so requests arriving meanwhile see the pool as taken.
        self._borrowed += 1
        try:
            if free:
                # A connection is idle and nobody waits, so acquire() takes it at once (at most it
                # connects, within connect_timeout): no timer to arm and cancel, 4% of a request.
                return await self.pool.acquire()
            return await self._wait_for_connection()
        except BaseException:
            self._borrowed -= 1
            raise

    async def _wait_for_connection(self) -> asyncpg.Connection:
        # The pool is full: wait in its queue for at most acquire_timeout, then TimeoutError. What
        # asyncio.timeout does, but with one timer for every waiting task instead of one each
        # (5 µs a request on Python 3.11, a sixth of it): all wait equally long, so the first to
        # come is the first due, and the timer only ever needs to be set for the oldest.
        # Not pool.acquire(timeout=...) either: asyncpg wraps that in wait_for, a new Task each time.
        task = asyncio.current_task(self.loop)
        self.waiting[task] = deadline = self.loop.time() + self._acquire_timeout
        if self._expiry is None:
            self._expiry = self.loop.call_at(deadline, self._expire_waiting)
        try:
            # A connection given back at once (give_back) has woken the oldest waiting request, but sits in the
            # pool's queue until that request runs, and asyncio's Queue.get takes whatever is there: one turn of
            # the loop first, so that a request arriving meanwhile, or one querying again, queues behind it.
            await asyncio.sleep(0)
            return await self.pool.acquire()
        except asyncio.CancelledError:
            # Cancelled by _expire_waiting, and by nothing else, is a timeout.
            if self.waiting[task] is None and task.uncancel() == 0:
                raise NoConnectionFree(f"no connection free within {self._acquire_timeout} s") from None
            raise
        finally:
            del self.waiting[task]

    def _expire_waiting(self) -> None:
        now = self.loop.time()
        for task, deadline in self.waiting.items():  # oldest first
            if deadline is None:  # expired already, still unwinding
                continue
            if deadline > now:
                self._expiry = self.loop.call_at(deadline, self._expire_waiting)
                return
            self.waiting[task] = None
            task.cancel()
        self._expiry = None

    def give_back(self, conn: asyncpg.Connection) -> bool:
        """Give `conn` back to the pool at once if it needs no reset nor any wait; False if it does, and then
        `release` must give it back."""
        # What asyncpg 0.32's Pool.release does for a connection with nothing to undo, where its reset query is
        # empty (Connection) and no transaction is open: the same checks and steps, without the task it starts for
        # every release (asyncio.shield), the timeout around the reset, and the turns of the event loop the
        # request waits for that task, each through every coroutine it awaits in: an eighth of a request's
        # instructions (bench/results/profile.md). tests/test_lender.py checks the steps against asyncpg's.
        # Anything else goes through asyncpg's release.
        if not self._direct:
            return False
        con = conn._con
        if con is None or con.session_changed or con._aborted or con._top_xact is not None:
            return False
        holder, protocol = conn._holder, con._protocol
        pool = holder._pool
        if (
            not protocol.is_connected()
            or protocol.is_in_transaction()
            or protocol._is_cancelling()
            or protocol.queries_count >= holder._max_queries
            or holder._generation != pool._generation
            or holder._in_use is None
            or pool._reset is not None
            or pool._closed
        ):
            return False
        con._on_release()  # Pool.release
        holder._timeout = None  # PoolConnectionHolder.release
        con._listeners.clear()  # Connection._reset
        con._log_listeners.clear()
        holder._release()  # back in the pool's queue, the next waiting request woken
        holder._setup_inactive_callback()
        self._borrowed -= 1
        return True

    async def release(self, conn: asyncpg.Connection) -> None:
        """Give `conn` back to the pool, which resets it when it must."""
        # The pool resets the connection here when it must (Connection: a round trip). No timer per request
        # bounds it, which would cost 1.4% of a request: StuckResets terminates a reset that takes over a second.
        resetting = self.resetting
        resetting.add(conn)
        try:
            await self.pool.release(conn)
        except Exception as exc:
            # The reset failed and asyncpg terminated the connection; the answer the request got stands.
            log.debug("connection terminated after its reset failed: %s", explain(exc))
        finally:
            resetting.discard(conn)
            # Only now is the connection back in the pool; counting it free any earlier would
            # let acquire wait for it without a timer.
            self._borrowed -= 1

    def drop(self, conn: asyncpg.Connection) -> None:
        """Terminate `conn` now, its server process left for the next probe to end."""
        # A connection whose query timed out or failed, or whose reset hangs, may wait on a network that
        # never answers: terminated now, not reset, nor cancelled over a new connection into the same
        # silence. Its server process, if it still runs, is ended by the next probe.
        try:
            if not conn.is_closed() and len(self.strays) < MAX_STRAYS:
                self.strays.append(conn.get_server_pid())
            conn.terminate()
        except asyncpg.InterfaceError:
            pass  # lost already: asyncpg closed it and took it back into the pool


# What Lender.give_back uses of asyncpg's pool, connection holders, proxies, connections and
# protocols: asyncpg 0.32's (slots and methods, so the classes tell).
PARTS = (
    ("pool", "Pool", ("_closed", "_generation", "_reset")),
    (
        "pool",
        "PoolConnectionHolder",
        ("_pool", "_in_use", "_timeout", "_max_queries", "_generation", "_release", "_setup_inactive_callback"),
    ),
    ("pool", "PoolConnectionProxy", ("_con", "_holder")),
    ("connection", "Connection", ("_aborted", "_top_xact", "_protocol", "_on_release", "_listeners", "_log_listeners")),
    ("protocol.protocol", "Protocol", ("is_connected", "is_in_transaction", "_is_cancelling", "queries_count")),
)


def knows_asyncpg() -> bool:
    """Whether the installed asyncpg has every part in PARTS."""
    for module, name, names in PARTS:
        try:
            kind = getattr(importlib.import_module(f"asyncpg.{module}"), name)
        except (ImportError, AttributeError):
            return False
        if not all(hasattr(kind, part) for part in names):
            return False
    return True


class StuckResets:
    """Once a second, the connections of `lender` whose reset on release ran through two sweeps in a row
    have waited over a second for a round trip of a millisecond: the network or the server is gone, and
    they are dropped."""

    def __init__(self, lender: Lender) -> None:
        self._lender = lender
        self._before: set = set()  # the connections resetting at the last sweep
        self._timer: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        """From start() to stop(): between the plugin's startup and its shutdown."""
        return self._timer is not None

    def start(self) -> None:
        """Sweep every SWEEP_INTERVAL, on the lender's loop."""
        self._timer = self._lender.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def stop(self) -> None:
        """Sweep no more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        resetting = self._lender.resetting
        stuck = resetting & self._before
        self._before = set(resetting)
        loop = self._lender.loop
        if stuck:
            loop.call_soon(self._terminate, stuck, LOOP_TURNS)
        self._timer = loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _terminate(self, stuck: set, turns: int) -> None:
        # On a loop lagging under load, a reset's answer may have come and still be a few turns of the
        # loop from its task (protocol, pool, shield, request): only what LOOP_TURNS turns leave is stuck.
        stuck &= self._lender.resetting
        if stuck and turns:
            self._lender.loop.call_soon(self._terminate, stuck, turns - 1)
            return
        for conn in stuck:
            self._lender.drop(conn)


KNOWN = knows_asyncpg()
