"""What went wrong with the database, from the requests refused and the probes' answers: an outage, a
read-only spell or an exhausted pool, each logged when a probe confirms it and when it ends."""

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from .errors import OUTAGE_TAIL, DatabaseReadOnly, DatabaseUnavailable, NoConnectionFree, explain

# The package's one logger, whichever module speaks: "heaven_plugins.postgres".
log = logging.getLogger(__package__)


class Trouble:
    """One outage, read-only spell or exhausted pool: since when, why, how many requests it refused."""

    __slots__ = ("confirmed", "last", "reason", "refused", "since")

    def __init__(self, since: float, reason: str) -> None:
        self.since = self.last = since  # the loop's clock at its first sign; `last` at its last refusal
        self.reason = reason  # what the first sign said
        self.refused = 0
        self.confirmed = False  # by a probe, which finds what the requests suspect; logged from then on


class Outages:
    """The three kinds of trouble, as requests suspect them (`refuse`) and probes find them (`found`).

    `available` is False from the first sign of an outage until the database answers again, `begun`
    counts the outages confirmed. Each change that leaves something wrong calls `on_trouble`, which
    starts the watch (a probe every WATCH_INTERVAL until it ends).
    """

    def __init__(self, where: str, max_size: int, acquire_timeout: float, extra: dict) -> None:
        self._where = where  # host:port/database, for the log
        self._max_size = max_size
        self._acquire_timeout = acquire_timeout
        self._extra = extra  # on each record logged: which plugin said it
        self.loop: asyncio.AbstractEventLoop | None = None  # the pool's, set at startup
        self.on_trouble: Callable[[], None] = lambda: None
        self.available = True
        self.begun = 0
        self.outage: Trouble | None = None
        self.outage_tail = 0.0  # until then, a request refused for want of a connection began waiting in it
        self.read_only: Trouble | None = None
        self.exhausted: Trouble | None = None
        self.failover = ""  # said by the WARNING that ends the outage: where the primary moved

    @property
    def any(self) -> bool:
        """Whether anything is wrong: an outage, a read-only spell or an exhausted pool."""
        return bool(self.outage or self.read_only or self.exhausted)

    def refuse(self, exc: BaseException) -> DatabaseUnavailable:
        """The error a request that failed with `exc` is refused with; the sign noted, the first one logged."""
        # Only refused requests come here.
        now = self.loop.time()
        if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
            # A failover onto a replica, if a probe finds the server read-only (logged then); else a
            # transaction the code itself declared read-only.
            if self.read_only is None:
                self.read_only = Trouble(now, explain(exc))
            self.read_only.refused += 1
            self.on_trouble()
            return DatabaseReadOnly(exc)
        if isinstance(exc, NoConnectionFree) and self.outage is None and now < self.outage_tail:
            # The wait began during an outage that has ended since: its connections were still held by
            # requests sent into it (a query over a silent network waits out its timeout). Not exhaustion.
            return DatabaseUnavailable(exc, reason=f"{OUTAGE_TAIL} ({type(exc).__name__}: {exc})")
        if isinstance(exc, NoConnectionFree) and not (self.outage and self.outage.confirmed):
            # The pool is exhausted: by a lock or slow queries if the database answers a probe (logged
            # then), else by an outage, which counts the refusals as its own.
            if self.exhausted is None:
                self.exhausted = Trouble(now, str(exc))
            self.exhausted.refused += 1
            self.exhausted.last = now
        else:
            # A refused connection, a dropped one, a timeout: an outage, or only a slow query? A probe tells.
            self.available = False
            if self.outage is None:
                self.outage = Trouble(now, explain(exc))
            self.outage.refused += 1
            self.on_trouble()
            return DatabaseUnavailable(exc, reason=self.outage.reason)
        self.on_trouble()
        return DatabaseUnavailable(exc)

    def suspect(self, exc: BaseException) -> None:
        """The pool failed to reconnect in the background: an outage, perhaps, that a probe confirms."""
        if self.outage is None:
            self.available = False
            self.outage = Trouble(self.loop.time(), explain(exc))
        self.on_trouble()

    def moved(self, before: str, now: str) -> None:
        """The primary answers at `now`, no longer at `before` (a failover): said when the outage ends, or
        at once when none was seen (the primary changed between two probes)."""
        self.failover = f"; the primary is now {now}, no longer {before} (a failover)"
        if self.outage is None or not self.outage.confirmed:
            log.warning("Postgres at %s has failed over%s", self._where, self.failover, extra=self._extra)
            self.failover = ""

    def found(self, state: str, reason: str) -> None:
        """What a probe found ("ok", "read_only", "unreachable" and why) ends or confirms what the requests saw."""
        now = self.loop.time()
        if state == "unreachable":
            self._unreachable(now, reason)
        else:
            self._answering(now)
            self._read_only(now, state)
            self._exhausted(now)
        self.on_trouble()

    def _unreachable(self, now: float, reason: str) -> None:
        self.available = False
        outage = self.outage
        if outage is None:
            outage = self.outage = Trouble(now, reason)
        if self.exhausted is not None and not self.exhausted.confirmed:
            outage.refused += self.exhausted.refused
            self.exhausted = None
        if not outage.confirmed:
            outage.confirmed = True
            self.begun += 1
            log.warning(
                "Postgres at %s is unreachable: %s; requests are refused with 503 until it answers",
                self._where,
                reason or outage.reason,
                extra=self._extra,
            )

    def _answering(self, now: float) -> None:
        outage = self.outage
        if outage is None:
            return
        self.outage = None
        self.available = True
        if outage.confirmed:
            self.outage_tail = now + self._acquire_timeout
            log.warning(
                "Postgres at %s answers again after %.1f s unreachable; %d requests refused%s",
                self._where,
                now - outage.since,
                outage.refused,
                self.failover,
                extra=self._extra,
            )
            self.failover = ""

    def _read_only(self, now: float, state: str) -> None:
        spell = self.read_only
        if state == "read_only" and (spell is None or not spell.confirmed):
            spell = self.read_only = spell or Trouble(now, "transaction_read_only is on")
            spell.confirmed = True
            log.warning(
                "Postgres at %s is read-only: writes are refused with 503 database_read_only, reads go on",
                self._where,
                extra=self._extra,
            )
        elif state == "ok" and spell is not None:
            self.read_only = None
            if spell.confirmed:
                log.warning(
                    "Postgres at %s accepts writes again after %.1f s read-only; %d requests refused",
                    self._where,
                    now - spell.since,
                    spell.refused,
                    extra=self._extra,
                )

    def _exhausted(self, now: float) -> None:
        exhausted = self.exhausted
        if exhausted is not None and not exhausted.confirmed:
            exhausted.confirmed = True
            log.warning(
                "all %d connections to Postgres at %s busy for %s s, the database answering: "
                "requests refused with 503 until one is free",
                self._max_size,
                self._where,
                self._acquire_timeout,
                extra=self._extra,
            )
        if exhausted is not None and now - exhausted.last > self._acquire_timeout:
            self.exhausted = None
            log.warning(
                "connections to Postgres at %s free again after %.1f s all busy; %d requests refused",
                self._where,
                exhausted.last - exhausted.since,
                exhausted.refused,
                extra=self._extra,
            )
