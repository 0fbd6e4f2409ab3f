"""Passwords: argon2id at its real cost, off the event loop; old parameters noticed; no hash, no match."""

import asyncio
import time

import argon2

from {{ cookiecutter.package_name }}.passwords import Passwords


async def started(passwords: Passwords) -> Passwords:
    await passwords.start()
    return passwords


async def test_a_hash_verifies_its_password_only():
    passwords = await started(Passwords(time_cost=1, memory_kib=1024))
    try:
        hashed = await passwords.hash("correct horse battery staple")
        assert hashed.startswith("$argon2id$v=19$m=1024,t=1,")
        assert await passwords.verify(hashed, "correct horse battery staple")
        assert not await passwords.verify(hashed, "correct horse battery stapler")
        assert not await passwords.verify(None, "correct horse battery staple")  # no user: the decoy, never a match
        assert not await passwords.verify("not a hash", "correct horse battery staple")
    finally:
        passwords.stop()


async def test_a_hash_made_with_other_parameters_needs_rehashing():
    old = argon2.PasswordHasher(time_cost=1, memory_cost=1024).hash("correct horse battery staple")
    passwords = Passwords(time_cost=2, memory_kib=2048)
    assert passwords.needs_rehash(old)
    assert not passwords.needs_rehash(passwords.hash_now("correct horse battery staple"))


async def test_the_defaults_are_argon2_cffis_and_hashing_leaves_the_event_loop_free():
    passwords = await started(Passwords())
    try:
        started_at = time.perf_counter()
        hashed = await passwords.hash("correct horse battery staple")
        one_hash = time.perf_counter() - started_at
        assert hashed.startswith(f"$argon2id$v=19$m={argon2.DEFAULT_MEMORY_COST},t={argon2.DEFAULT_TIME_COST},")

        # While four checks run, the loop still turns: its longest pause is a fraction of one hash.
        pauses, done = [], asyncio.Event()

        async def tick():
            while not done.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0)
                pauses.append(time.perf_counter() - before)

        ticker = asyncio.create_task(tick())
        await asyncio.gather(*(passwords.verify(hashed, f"wrong guess number {i}") for i in range(4)))
        done.set()
        await ticker
    finally:
        passwords.stop()
    assert len(pauses) > 100
    # A hash that held the GIL would stop the loop for a whole hash or more. The OS may still leave the loop's
    # thread waiting for a core while the checks take both cores of a 2-core machine: up to 0.6 of a hash was
    # seen with the rest of a test suite running beside it. So the bound is the whole hash, and no less.
    assert max(pauses) < one_hash, (max(pauses), one_hash)
