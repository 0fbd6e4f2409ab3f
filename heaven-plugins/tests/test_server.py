"""The edge's limits (server.py) through real uvicorn on loopback, with bounds set small: oversized and slow
headers, slow bodies, idle connections, too many connections, memory under half-sent requests, and whose
X-Forwarded-For is believed."""

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from heaven_plugins.server import Limits


def refusals(lines: list[dict], reason: str) -> list[dict]:
    return [line for line in lines if line.get("reason") == reason]


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def until_closed(reader: asyncio.StreamReader, within: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and the seconds that took; fails past `within`."""
    started, data = time.monotonic(), b""
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionError:  # closed with bytes of ours unread: the kernel resets instead
        pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {within} s; received {data[:80]!r}")
    return data, time.monotonic() - started


async def dribble(writer: asyncio.StreamWriter, data: bytes, every: float = 0.05) -> None:
    """A slow client: `data` a byte at a time. The waits are the client's pace, the thing under test."""
    for byte in data:
        if writer.is_closing():
            return
        writer.write(bytes([byte]))
        await asyncio.sleep(every)


async def test_an_oversized_header_is_431_and_logged(migrated, serve, log_lines):
    url = await serve(migrated, http_max_header_bytes=4096)
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health", headers={"X-Fill": "a" * 3000})).status_code == 200
    log_lines()
    reader, writer = await connect(url)
    # Never finished: the server must not wait for the end of it to refuse.
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Fill: " + b"a" * 65536)
    data, _ = await until_closed(reader, within=3)
    writer.close()
    assert data == b"" or data.startswith(b"HTTP/1.1 431 "), data
    (line,) = refusals(log_lines(), "header_too_large")
    assert line["level"] == "WARNING" and line["client"] == "127.0.0.1" and "4096" in line["detail"]


async def test_a_slow_header_is_cut_off_within_its_bound(migrated, serve, log_lines):
    url = await serve(migrated, http_header_timeout=0.5)
    reader, writer = await connect(url)
    client = asyncio.create_task(dribble(writer, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200))
    data, seconds = await until_closed(reader, within=3)
    client.cancel()
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in data, data
    assert 0.45 < seconds < 1.5, seconds
    (line,) = refusals(log_lines(), "request_timeout")
    assert "headers" in line["detail"] and line["client"] == "127.0.0.1"


async def test_a_slow_body_is_cut_off_within_its_bound(migrated, serve, conn, log_lines):
    url = await serve(migrated, http_body_timeout=0.5)
    reader, writer = await connect(url)
    body = json.dumps({"email": "slow@example.com", "name": "Slow", "password": "x" * 40}).encode()
    head = f"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body[:10])
    client = asyncio.create_task(dribble(writer, body[10:]))
    data, seconds = await until_closed(reader, within=3)
    client.cancel()
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert 0.45 < seconds < 1.5, seconds
    assert "body" in refusals(log_lines(), "request_timeout")[0]["detail"]
    assert await conn.fetchval("SELECT count(*) FROM users") == 0  # the cut-off body created nothing


async def test_an_idle_connection_is_closed_within_its_bound(migrated, serve):
    url = await serve(migrated, http_keep_alive_timeout=0.3)
    # One that never sends a request, and one after its request was answered.
    reader, writer = await connect(url)
    data, seconds = await until_closed(reader, within=3)
    writer.close()
    assert data == b"" and 0.25 < seconds < 1.5, (data, seconds)
    reader, writer = await connect(url)
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    data, seconds = await until_closed(reader, within=3)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200 ") and seconds < 1.5, (data, seconds)


async def test_connections_over_the_limit_are_refused_at_once_and_logged(migrated, serve, log_lines):
    url = await serve(migrated, http_max_connections=3)
    held = [await connect(url) for _ in range(3)]
    for reader, writer in held:  # each answered, so the server counts it, and kept open
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200 ")
    log_lines()
    reader, writer = await connect(url)
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    data, seconds = await until_closed(reader, within=3)
    writer.close()
    assert data == b"" or data.startswith(b"HTTP/1.1 503 "), data
    assert seconds < 1.0, seconds
    (line,) = refusals(log_lines(), "too_many_connections")
    assert "HTTP_MAX_CONNECTIONS=3" in line["detail"]
    for _, writer in held:
        writer.close()

    async def served() -> bool:
        async with httpx.AsyncClient(base_url=url) as http:
            return (await http.get("/health/live")).status_code == 200

    await served_within(served)


async def served_within(condition, within: float = 3.0) -> None:
    started = time.monotonic()
    while True:
        try:
            if await condition():
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() - started < within, f"not served again within {within} s"
        await asyncio.sleep(0.02)


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_memory_stays_bounded_under_many_half_sent_requests(migrated, spawn):
    # Its own process, whose memory alone is measured, serving as the Dockerfile does.
    process = spawn(migrated, http_max_connections=100)
    before = resident_mib(process.process.pid)
    fill = b"a" * 16384

    async def half_send() -> bytes:
        reader, writer = await connect(process.url)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Fill: ")
            for _ in range(16):  # 256 KiB of one header, never finished
                writer.write(fill)
                await writer.drain()
        except ConnectionError:
            pass  # refused while sending: what should happen
        try:
            return (await until_closed(reader, within=5))[0]
        finally:
            writer.close()

    answers = await asyncio.gather(*(half_send() for _ in range(250)))
    grown = resident_mib(process.process.pid) - before
    assert grown < 24, f"{grown:.0f} MiB more for 250 half-sent requests"
    # Refused each: for its size (431) or for being one too many (503), or reset while it still sent.
    assert {answer[:12] for answer in answers} <= {b"", b"HTTP/1.1 431", b"HTTP/1.1 503"}
    log = [json.loads(line) for line in process.output().splitlines() if line.startswith("{")]
    assert refusals(log, "header_too_large") and refusals(log, "too_many_connections")


async def sign_in_attempts(url: str, forwarded_for: list[str]) -> list[int]:
    """A wrong password once from each claimed address, each for another email: the statuses."""
    async with httpx.AsyncClient(base_url=url) as http:
        statuses = []
        for n, address in enumerate(forwarded_for):
            credentials = {"email": f"nobody{n}@example.com", "password": "not the password"}
            answer = await http.post("/auth/token", json=credentials, headers={"X-Forwarded-For": address})
            statuses.append(answer.status_code)
        return statuses


async def test_x_forwarded_for_is_ignored_unless_its_proxy_is_named(migrated, serve, conn, log_lines):
    claims = [f"203.0.113.{n}" for n in range(1, 5)]
    # By default a client on loopback is loopback, whatever it claims: throttled as one address.
    url = await serve(migrated, sign_in_address_limit=2)
    log_lines()
    assert (await sign_in_attempts(url, claims))[-1] == 429
    clients = {line["client"] for line in log_lines() if line.get("method") == "POST"}
    assert clients == {"127.0.0.1"}, clients

    # Naming loopback as the proxy, the forwarded address is the client's: four addresses, none over the limit.
    url = await serve(migrated, sign_in_address_limit=2, forwarded_allow_ips="127.0.0.1")
    assert await sign_in_attempts(url, claims) == [401] * 4
    clients = {line["client"] for line in log_lines() if line.get("method") == "POST"}
    assert clients == set(claims), clients


def test_bounds_that_make_no_sense_stop_the_server_naming_them():
    with pytest.raises(SystemExit, match="HTTP_HEADER_TIMEOUT"):
        Limits.from_env({"HTTP_HEADER_TIMEOUT": "0"}, env_file=None)
    assert Limits.from_env({"HTTP_MAX_CONNECTIONS": "7"}, env_file=None).http_max_connections == 7


@pytest.mark.parametrize("value", ["*", "localhost", "10.0.0.0/33", "127.0.0.1, *"])
def test_forwarded_allow_ips_takes_addresses_and_networks_alone(value):
    # `*` would believe every client's claim; a typo, no one's (each client then the proxy's one address).
    with pytest.raises(SystemExit, match="FORWARDED_ALLOW_IPS"):
        Limits.from_env({"FORWARDED_ALLOW_IPS": value}, env_file=None)
    assert Limits.from_env({"FORWARDED_ALLOW_IPS": "10.0.0.0/8, ::1, 127.0.0.1"}, env_file=None)
