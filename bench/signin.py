"""The baked service signed in: an admin made with its own command, a token from POST /auth/token, and what the
sign-in check costs each request, in instructions (callgrind) and in microseconds (timed in-process).

    python bench/signin.py time            # what run.py runs, in the bench's venv, with DATABASE_URL set
"""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import prepare

EMAIL, PASSWORD = "bench-admin@example.com", "the bench admin's password"


def admin_token(url: str, dsn: str) -> str:
    """Make an admin as the baked README says (`python -m <package>.admin EMAIL`, the password on stdin), sign
    in at `url`, and return the `Authorization` header's value."""
    made = subprocess.run(
        [sys.executable, "-m", f"{prepare.PACKAGE}.admin", EMAIL],
        input=f"{PASSWORD}\n",
        env={**os.environ, "DATABASE_URL": dsn},
        cwd=prepare.WORK,  # not wherever the bench was started from, which may hold a .env
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if made.returncode != 0:
        raise RuntimeError(f"the admin command failed: {made.stderr[-2000:]}")
    body = json.dumps({"email": EMAIL, "password": PASSWORD}).encode()
    request = urllib.request.Request(f"{url}/auth/token", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return f"Bearer {json.loads(response.read())['access_token']}"


def measure(env: dict, path: str, concurrency: int, signed_in: int, public: int, scratch: Path) -> dict:
    """The check's instructions per request, from callgrind's counts of the baked service (`signed_in`) and of
    the same with the route public (`public`), and its microseconds and argon2's milliseconds, timed in-process."""
    timed = subprocess.run(
        [sys.executable, __file__, "time"],
        env=env,
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if timed.returncode != 0:
        raise RuntimeError(f"timing the sign-in check failed: {timed.stderr[-2000:]}")
    return {
        "path": path,
        "concurrency": concurrency,
        "instructions": {"signed_in": signed_in, "public": public},
        "check_instructions": signed_in - public,
        "check_share": round((signed_in - public) / signed_in, 4),
        **json.loads(timed.stdout),
    }


async def _time() -> dict:
    """Start the baked app (its lifespan: pool, revocations, password threads), then time its sign-in check on a
    request as Heaven builds it, and argon2 at the shipped cost through the app's own password threads."""
    from heaven.context import Context
    from heaven.request import Request
    from heaven.utils import preprocessor

    app = __import__(f"{prepare.PACKAGE}.app", fromlist=["app"]).app
    from heaven_plugins.signin.tokens import Tokens

    inbox, outbox = asyncio.Queue(), asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put))
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"startup failed: {started}")
    auth = app.peek("auth")
    headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", os.environ["BENCH_AUTHORIZATION"].encode())]
    scope = {"type": "http", "method": "GET", "path": "/users", "headers": headers, "client": ("127.0.0.1", 1)}

    def check_once() -> None:
        # What a request pays: Heaven's request and context as every request gets them, then the guard.
        req = Request(scope, b"", None, preprocessor(scope), app)
        auth.guard.require_admin(req, Context(app))

    def request_alone() -> None:
        Request(scope, b"", None, preprocessor(scope), app), Context(app)

    # Tokens this process has never seen (as from a client's first request): their signature is checked.
    tokens = Tokens([os.environ["TOKEN_SECRET"]], auth.ttl)
    fresh = iter([f"Bearer {tokens.issue(1, True, time.time())[0]}".encode() for _ in range(7 * 20_000)])

    def first_check() -> None:
        headers[1] = (b"authorization", next(fresh))
        check_once()

    def per_call(function, calls: int = 20_000) -> float:
        best = []
        for _ in range(7):
            before = time.perf_counter()
            for _ in range(calls):
                function()
            best.append((time.perf_counter() - before) / calls)
        return min(best)

    check_us = (per_call(check_once) - per_call(request_alone)) * 1e6
    first_us = (per_call(first_check) - per_call(request_alone)) * 1e6
    hashed, hashes, verifies = None, [], []
    for _ in range(5):
        before = time.perf_counter()
        hashed = await auth.passwords.hash(PASSWORD)
        hashes.append(time.perf_counter() - before)
        before = time.perf_counter()
        await auth.passwords.verify(hashed, PASSWORD)
        verifies.append(time.perf_counter() - before)
    await inbox.put({"type": "lifespan.shutdown"})
    await outbox.get()
    await lifespan
    return {
        "check_us": round(check_us, 2),
        "first_check_us": round(first_us, 2),
        "argon2": hashed.rsplit("$", 2)[0].split("$", 3)[-1],  # its parameters: m=..,t=..,p=..
        "argon2_hash_ms": round(statistics.median(hashes) * 1000, 1),
        "argon2_verify_ms": round(statistics.median(verifies) * 1000, 1),
    }


if __name__ == "__main__":
    if sys.argv[1:] != ["time"]:
        raise SystemExit(__doc__)
    print(json.dumps(asyncio.run(_time())))
