"""Passwords: argon2id hashes, made and checked on threads of their own so that no sign-in stalls the event loop."""

import asyncio
import logging
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import argon2
from msgspec import Meta

log = logging.getLogger(__name__)

# Long enough to be worth guessing against, short enough that nobody hashes a megabyte on our time.
Password = Annotated[str, Meta(min_length=8, max_length=256, description="8 to 256 characters")]


class Passwords:
    """argon2id (argon2-cffi) with `time_cost` passes over `memory_kib` KiB; the defaults are
    argon2-cffi's own, RFC 9106's low-memory profile. A hash made with other parameters still
    verifies, and `needs_rehash` says it should be made again.

    Hashing takes tens of milliseconds of CPU and `memory_kib` of memory, so at most `threads`
    run at once, off the event loop (argon2-cffi releases the GIL while it hashes).
    """

    def __init__(
        self,
        time_cost: int = argon2.DEFAULT_TIME_COST,
        memory_kib: int = argon2.DEFAULT_MEMORY_COST,
        threads: int = min(4, os.cpu_count() or 1),
    ) -> None:
        self._hasher = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._decoy: str | None = None

    async def start(self) -> None:
        """Open the threads, and make the decoy hash an unknown email is checked against."""
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="argon2")
        self._decoy = await self._run(self._hasher.hash, secrets.token_urlsafe(16))

    def stop(self) -> None:
        """Let the hashes under way finish, and close the threads."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def hash(self, password: str) -> str:
        """The argon2id hash of `password` (a string that carries its own parameters and salt)."""
        return await self._run(self._hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """Whether `password` is the one `hashed` was made from. With no hash (an unknown email, a
        user who never set a password) a decoy is checked, so that answering takes as long."""
        return await self._run(self._verify, hashed, password)

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

    async def _run(self, function, *args):
        if self._executor is None:
            raise RuntimeError("Passwords.start() was not awaited")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
