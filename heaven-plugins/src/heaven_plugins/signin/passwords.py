"""Passwords: argon2id hashes, made and checked on threads of their own so that no sign-in stalls the event loop,
a few at a time, sign-ins first, and what would wait too long refused at once."""

import asyncio
import collections
import logging
import math
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import argon2
from msgspec import Meta

log = logging.getLogger(__name__)

# Long enough to be worth guessing against, short enough that nobody hashes a megabyte on our time.
Password = Annotated[str, Meta(min_length=8, max_length=256, description="8 to 256 characters")]

# Resident memory the process needs besides its hashes (Python, uvicorn, the pool, requests in flight), with room
# to spare: a memory limit must hold this plus one argon2 memory cost per hash thread.
PROCESS_MIB = 96
# More threads than this would add memory on a big machine without a limit, and little speed.
MAX_THREADS = 4
# The two lanes of work: checks (a sign-in) and hashes (a sign-up, a new password). With two threads or more, one is
# kept for checks, so that a sign-in waits for no sign-up, however many there are; with work waiting in both lanes,
# a thread set free goes to the other lane first, so that neither starves the other.
CHECK, HASH = 0, 1
# Refusals are answered one by one; the log says so once in this many seconds, with how many there were.
WARN_EVERY = 60.0


class PasswordsBusy(Exception):
    """Too much password work waits already: try again in `retry_after` seconds, when the work now waiting is done
    (the plugin answers 503 with `Retry-After`)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many passwords to hash right now; try again in {retry_after} s")
        self.retry_after = retry_after


class Passwords:
    """argon2id (argon2-cffi) with `time_cost` passes over `memory_kib` KiB; the defaults are
    argon2-cffi's own, RFC 9106's low-memory profile. A hash made with other parameters still
    verifies, and `needs_rehash` says it should be made again.

    Hashing takes tens of milliseconds of CPU and `memory_kib` of memory, so at most `threads`
    run at once, off the event loop (argon2-cffi releases the GIL while it hashes); 0 threads
    means as many as the container's CPUs and memory allow (`hash_threads`).

    Two lanes share the threads: checks (`verify`, a sign-in) and hashes (`hash`, a sign-up or a
    new password). Hashes leave one thread to checks (of two or more), and a thread set free goes to
    the other lane's work first, so that with both waiting they take turns. Work
    that finds no thread for it waits at most `wait` seconds; work that would wait longer (going
    by how long hashes take now), or find `queue` waiting in its lane already, is refused at
    once. Either refusal is `PasswordsBusy`, which says when to try again.
    """

    def __init__(
        self,
        time_cost: int = argon2.DEFAULT_TIME_COST,
        memory_kib: int = argon2.DEFAULT_MEMORY_COST,
        threads: int = 0,
        *,
        queue: int = 64,
        wait: float = 5.0,
    ) -> None:
        self._hasher = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        self.threads = threads or hash_threads(memory_kib, self._hasher.parallelism)
        self._queue, self._wait = queue, wait
        self._free = self.threads
        self._share = (self.threads, max(1, self.threads - 1))  # the most threads each lane may hold
        self._running = [0, 0]
        self._lanes: tuple[collections.deque[asyncio.Future], ...] = (collections.deque(), collections.deque())
        self._seconds = [0.0, 0.0]  # how long a hash of each lane takes these days: a moving average
        self._refused, self._warned_at = 0, -math.inf
        self._executor: ThreadPoolExecutor | None = None
        self._decoy: str | None = None

    async def start(self) -> None:
        """Open the threads, and make the decoy hash an unknown email is checked against."""
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="argon2")
        self._decoy = await self._run(HASH, self._hasher.hash, secrets.token_urlsafe(16))
        self._seconds[CHECK] = self._seconds[HASH]  # a check costs what a hash does, until one is timed

    def stop(self) -> None:
        """Let the hashes under way finish, and close the threads."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def hash(self, password: str) -> str:
        """The argon2id hash of `password` (a string that carries its own parameters and salt)."""
        return await self._run(HASH, self._hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """Whether `password` is the one `hashed` was made from. With no hash (an unknown email, a
        user who never set a password) a decoy is checked, so that answering takes as long."""
        return await self._run(CHECK, self._verify, hashed, password)

    def needs_rehash(self, hashed: str) -> bool:
        """Whether `hashed` was made with other parameters than the current ones."""
        return self._hasher.check_needs_rehash(hashed)

    def hash_now(self, password: str) -> str:
        """`hash`, on the calling thread: for a command line, not for the event loop."""
        return self._hasher.hash(password)

    def _verify(self, hashed: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(hashed or self._decoy, password) and hashed is not None
        except argon2.exceptions.VerifyMismatchError:
            return False
        except argon2.exceptions.InvalidHashError:
            # Not something we ever store; never log the hash itself.
            log.warning("a stored password hash is not an argon2 hash; that user cannot sign in")
            return False

    async def _run(self, lane: int, function, *args):
        if self._executor is None:
            raise RuntimeError("Passwords.start() was not awaited")
        await self._enter(lane)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._timed, lane, function, *args)
        finally:
            self._leave(lane)

    def _timed(self, lane: int, function, *args):
        started = time.perf_counter()
        try:
            return function(*args)
        finally:
            seconds, average = time.perf_counter() - started, self._seconds[lane]
            self._seconds[lane] = 0.8 * average + 0.2 * seconds if average else seconds

    def _may_start(self, lane: int) -> bool:
        return self._free > 0 and self._running[lane] < self._share[lane]

    def _start(self, lane: int) -> None:
        self._free -= 1
        self._running[lane] += 1

    async def _enter(self, lane: int) -> None:
        if self._may_start(lane) and not any(self._lanes[: lane + 1]):
            self._start(lane)
            return
        waiting = self._lanes[lane]
        if len(waiting) >= self._queue or self._expected_wait(lane) > self._wait:
            raise self._busy(lane)
        turn = asyncio.get_running_loop().create_future()
        waiting.append(turn)
        try:
            async with asyncio.timeout(self._wait):
                await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                # The thread was handed over (_leave) as the wait ran out: use it rather than waste it.
                if isinstance(exc, TimeoutError):
                    return
                self._leave(lane)
                raise
            if turn in waiting:
                waiting.remove(turn)
            if isinstance(exc, TimeoutError):
                raise self._busy(lane) from None
            raise

    def _leave(self, lane: int) -> None:
        self._free += 1
        self._running[lane] -= 1
        # The thread goes to the first waiting in the other lane, else in this one, else stays free: with
        # work waiting in both, they take turns, so a stream of sign-ins cannot starve sign-ups, nor the reverse.
        for next_lane in (1 - lane, lane):
            waiting = self._lanes[next_lane]
            while waiting and self._may_start(next_lane):
                turn = waiting.popleft()
                if not turn.done():  # done: cancelled as its wait ran out, and not yet taken out by its owner
                    self._start(next_lane)
                    turn.set_result(None)

    def _expected_wait(self, lane: int) -> float:
        # For a newcomer to this lane: the hashes under way, then what waits ahead of it, its share at a time.
        ahead = sum(map(len, self._lanes[: lane + 1]))
        return (1 + ahead / self._share[lane]) * self._seconds[lane]

    def _busy(self, lane: int) -> PasswordsBusy:
        retry_after = max(1, math.ceil(self._expected_wait(lane)))
        self._refused += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            log.warning(
                "password work refused (503, Retry-After: %d s): %d refused since the last warning, %d waiting",
                retry_after,
                self._refused,
                sum(map(len, self._lanes)),
            )
            self._refused, self._warned_at = 0, now
        return PasswordsBusy(retry_after)


def hash_threads(
    memory_kib: int,
    lanes: int = argon2.DEFAULT_PARALLELISM,
    cgroup: Path = Path("/sys/fs/cgroup"),
    proc: Path = Path("/proc/self"),
) -> int:
    """Hash threads for argon2's `memory_kib` and `lanes`: one kept for checks, and for hashes one per `lanes`
    CPUs the process may use (each hash runs its lanes on threads of their own) or at least one; no more than its
    memory limit holds beside PROCESS_MIB; at least 1 and at most MAX_THREADS."""
    cpus, memory = container_limits(cgroup, proc)
    threads = min(MAX_THREADS, 1 + max(1, cpus // lanes))
    if memory is not None:
        threads = min(threads, (memory // 1024 - PROCESS_MIB * 1024) // memory_kib)
    return max(1, threads)


def container_limits(cgroup: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self")) -> tuple[int, int | None]:
    """The CPUs (a quota rounded up) and bytes of memory this process's cgroup (v2 or v1) allows, as a
    container's limits set them; without a CPU quota, the CPUs it may run on; without a memory limit, None."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_file(cgroup, proc, "", "cpu.max")
    if quota is not None:  # v2: "150000 100000", or "max 100000" without a quota
        limit, _, period = quota.partition(" ")
    else:  # v1: -1 without a quota
        limit = _cgroup_file(cgroup, proc, "cpu", "cpu.cfs_quota_us") or "-1"
        period = _cgroup_file(cgroup, proc, "cpu", "cpu.cfs_period_us") or "100000"
    if limit not in ("max", "-1"):
        cpus = min(cpus, math.ceil(int(limit) / int(period)))
    memory = _cgroup_file(cgroup, proc, "", "memory.max") or _cgroup_file(
        cgroup, proc, "memory", "memory.limit_in_bytes"
    )
    # v2 says "max" without a limit, v1 a number near 2**63.
    return max(1, cpus), int(memory) if memory not in (None, "max") and int(memory) < 2**62 else None


def _cgroup_file(cgroup: Path, proc: Path, controller: str, name: str) -> str | None:
    # A container usually sees its own cgroup at the root of the mount; a process on a host sees the whole tree,
    # and /proc/self/cgroup says where in it the process is ("0::/path" for v2, "4:memory:/path" for v1).
    places = []
    try:
        lines = (proc / "cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):  # v2's line lists none: "" is in [""]
            mount = cgroup / controllers
            places += [mount / path.lstrip("/") / name, mount / name]
    places.append(cgroup / controller / name)
    for place in places:
        try:
            return place.read_text().strip()
        except OSError:
            continue
    return None
