"""Passwords: argon2id at its real cost, off the event loop; old parameters noticed; no hash, no match; sign-ins
first and the excess refused at once; as many threads as the container's limits hold."""

import asyncio
import json
import os
import statistics
import time
from urllib.parse import urlsplit

import argon2
import httpx
import pytest

from conftest import PASSWORD, sign_up
from example import Settings
from heaven_plugins.signin.passwords import (
    PROCESS_MIB,
    Passwords,
    PasswordsBusy,
    container_limits,
    hash_threads,
)


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
    passwords = await started(Passwords(wait=30))  # no check refused for waiting: what is measured is the loop
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


def in_order(done: list[str]):
    """`run(name, work)`: await `work`, then note `name` in `done`, to see in which order the work finished."""

    async def run(name, work):
        await work
        done.append(name)

    return run


async def test_a_check_goes_before_the_hashes_waiting_and_work_past_the_queue_is_refused_at_once():
    # Hashes long enough (tens of ms) that the check is waiting before the first of them is done.
    passwords = await started(Passwords(time_cost=2, memory_kib=32768, threads=1, queue=3, wait=30))
    try:
        hashed = await passwords.hash(PASSWORD)
        done = []
        run = in_order(done)
        # The one thread hashes sign-up 0 while 1, 2 and 3 wait; the check comes last and goes next.
        sign_ups = [asyncio.create_task(run(f"sign-up {i}", passwords.hash(f"password {i}"))) for i in range(4)]
        await asyncio.sleep(0)  # each task takes its place in the lane before the next work arrives
        started_at = time.perf_counter()
        with pytest.raises(PasswordsBusy) as refused:
            await passwords.hash("one too many")
        refused_in = time.perf_counter() - started_at
        await asyncio.gather(run("sign-in", passwords.verify(hashed, PASSWORD)), *sign_ups)
    finally:
        passwords.stop()
    assert done[:2] == ["sign-up 0", "sign-in"], done
    assert refused_in < 0.05, refused_in
    assert refused.value.retry_after >= 1  # answered 503 with Retry-After: the flood below sees it over HTTP


async def test_sign_ins_and_sign_ups_waiting_together_take_turns():
    passwords = await started(Passwords(time_cost=2, memory_kib=32768, threads=1, queue=10, wait=30))
    try:
        hashed = await passwords.hash(PASSWORD)
        done = []
        run = in_order(done)
        sign_ins = [asyncio.create_task(run(f"sign-in {i}", passwords.verify(hashed, PASSWORD))) for i in range(4)]
        await asyncio.sleep(0)  # sign-in 0 takes the thread, and 1, 2 and 3 wait before the sign-up comes
        sign_up = asyncio.create_task(run("sign-up", passwords.hash("a new password")))
        await asyncio.gather(*sign_ins, sign_up)
    finally:
        passwords.stop()
    # Next after the sign-in under way, not after every sign-in waiting: a stream of them would starve it.
    assert done[:2] == ["sign-in 0", "sign-up"], done


async def test_work_that_would_wait_longer_than_the_bound_is_refused():
    passwords = await started(Passwords(threads=1, wait=0.05))  # argon2's real cost: one hash is longer than that
    try:
        results = await asyncio.gather(*(passwords.hash(f"password {i}") for i in range(3)), return_exceptions=True)
    finally:
        passwords.stop()
    assert isinstance(results[0], str)
    assert [type(result) for result in results[1:]] == [PasswordsBusy, PasswordsBusy]


# A flood as the issue that found it sent: a hundred sign-ups at once, each an argon2 hash at the shipped cost.
FLOOD = 100


async def post(url: str, path: str, body: dict) -> tuple[int, dict[str, str], dict, float]:
    """POST a JSON body over a connection of its own, written in one piece (a flood from many clients costs the
    test little): the status, headers and body, and the seconds the answer took."""
    address = urlsplit(url)
    payload = json.dumps(body).encode()
    started_at = time.perf_counter()
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    seconds = time.perf_counter() - started_at
    head, _, content = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    if headers.get("transfer-encoding") == "chunked":
        chunks, content = content, b""
        while size := int(chunks.partition(b"\r\n")[0], 16):
            start = chunks.index(b"\r\n") + 2
            content, chunks = content + chunks[start : start + size], chunks[start + size + 2 :]
    return int(status_line.split()[1]), headers, json.loads(content), seconds


async def test_a_sign_in_stays_fast_during_a_flood_of_sign_ups_whose_excess_is_refused_at_once(migrated, conn, spawn):
    shipped = Settings()  # argon2-cffi's cost and a wait of 5 s, as a project ships them
    service = spawn(migrated, argon2_time_cost=shipped.argon2_time_cost, argon2_memory_kib=shipped.argon2_memory_kib)
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        await sign_up(http, "owner@example.com")
    owner = {"email": "owner@example.com", "password": PASSWORD}
    status, _, _, before = await post(service.url, "/auth/token", owner)  # what a sign-in takes on this machine now
    assert status == 200
    new = [{"email": f"flood{i}@example.com", "name": "F", "password": PASSWORD} for i in range(FLOOD)]
    flood = [asyncio.create_task(post(service.url, "/users", user)) for user in new]
    # The flood is in the service once its first answer is back; the owner signs in behind it.
    await asyncio.wait(flood, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    status, _, _, signing_in = await post(service.url, "/auth/token", owner)
    answers = await asyncio.gather(*flood)
    _, _, _, after = await post(service.url, "/auth/token", owner)
    idle = max(before, after)  # the machine's load may have changed meanwhile: the slower of the two
    refused = [(headers, body, seconds) for code, headers, body, seconds in answers if code == 503]
    created = sum(answer[0] == 201 for answer in answers)
    times = sorted(seconds for *_, seconds in refused) or [0]
    print(
        f"sign-in {idle * 1000:.0f} ms alone, {signing_in * 1000:.0f} ms during {FLOOD} sign-ups; {created} created,"
        f" {len(refused)} refused in {statistics.median(times) * 1000:.0f} ms (median), {times[-1] * 1000:.0f} ms"
        " at most"
    )
    # Under a second. The check shares the CPUs with the sign-up hash under way, so it may take twice as long as
    # alone: on a machine so busy that a sign-in alone takes a third of a second, three sign-ins' time at most.
    assert status == 200 and signing_in < max(1.0, 3 * idle), (status, signing_in, idle)
    assert created + len(refused) == FLOOD, [answer for answer in answers if answer[0] not in (201, 503)]
    assert created >= 1 and refused
    for headers, body, seconds in refused:
        assert int(headers["retry-after"]) >= 1
        detail = f"too many passwords to hash right now; try again in {headers['retry-after']} s"
        assert body == {"error": "busy", "detail": detail}, body
        # Refused once it had waited HASH_WAIT at most: never after a long queue.
        assert seconds < shipped.hash_wait + 1.0, seconds
    # And most at once: what would wait too long is not made to wait first.
    assert statistics.median(times) < 0.5, times


def test_the_thread_count_follows_the_containers_cpu_quota_and_memory_limit(tmp_path):
    v2, v1, proc = tmp_path / "v2", tmp_path / "v1", tmp_path / "proc"
    for folder in (v2, v1 / "cpu", v1 / "memory", proc):
        folder.mkdir(parents=True)
    # cgroup v2, as a container sees its own: 1.5 CPUs, 256 MiB.
    (proc / "cgroup").write_text("0::/\n")
    (v2 / "cpu.max").write_text("150000 100000\n")
    (v2 / "memory.max").write_text(f"{256 * 2**20}\n")
    cpus, memory = container_limits(v2, proc)
    assert (cpus, memory) == (min(2, len(os.sched_getaffinity(0))), 256 * 2**20)
    # 256 MiB holds the process and two hashes of 64 MiB beside it, not three: one for checks, one for the rest.
    assert hash_threads(65536, 1, v2, proc) == 2
    assert hash_threads(65536, 4, v2, proc) == 2
    (v2 / "memory.max").write_text(f"{(PROCESS_MIB + 64) * 2**20}\n")
    assert hash_threads(65536, 4, v2, proc) == 1
    (v2 / "memory.max").write_text(f"{PROCESS_MIB * 2**20}\n")
    assert hash_threads(65536, 4, v2, proc) == 1  # never none
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "memory.max").write_text("max\n")
    assert container_limits(v2, proc)[1] is None
    # cgroup v1, the process in a cgroup of its own below the mount: 1 CPU, no memory limit.
    (proc / "cgroup").write_text("4:memory:/pod/web\n1:cpu,cpuacct:/pod/web\n0::/\n")
    (v1 / "cpu,cpuacct" / "pod" / "web").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "pod" / "web" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu,cpuacct" / "pod" / "web" / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert container_limits(v1, proc) == (1, None)
    assert hash_threads(65536, 1, v1, proc) == 2
    (v1 / "cpu,cpuacct" / "pod" / "web" / "cpu.cfs_quota_us").write_text("-1\n")  # no quota: the CPUs it runs on
    assert hash_threads(65536, 1, v1, proc) == min(4, 1 + len(os.sched_getaffinity(0)))
