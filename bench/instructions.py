"""Instructions per request, counted by valgrind's callgrind: the one figure here that a noisy machine cannot move.

Each contender's ASGI app runs in-process under callgrind, without uvicorn, HTTP or wrk: the same
requests through the app, its framework and its database driver, against the same Postgres. Two calls of
libc functions nothing else here calls mark the counted requests, after a warm-up: callgrind zeroes
its count at the first and writes it out at the second, so interpreter start, imports, the pool's
connections, the warm-up and the exit stay outside it. Until the warm-up is over callgrind does not even
instrument (`--instr-atstart=no`, then `callgrind_control -i on`): the imports alone take some 2 billion
instructions, four times slower instrumented than not. One process a contender and path.
Requests go `concurrency` at a time, as wrk's connections would.

    python bench/instructions.py drive MODULE:APP APP_DIR PATH REQUESTS CONCURRENCY   # what callgrind runs
"""

import asyncio
import collections
import importlib
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WARMUP = 160  # requests before the counted ones: caches filled, statements prepared, the pool's connections used
# Two libc functions nothing else here calls mark the counted requests: callgrind zeroes its count on entering the
# first and writes it out on entering the second. (Written out at the start too, the baked service answered the
# requests after it 503: the pause of writing a profile is long enough for its own watch of the database.)
START, END = "getloadavg", "getsid"
# Bounds how long the driver waits for callgrind to take `callgrind_control -i on` (it answers within a second).
INSTRUMENT_TIMEOUT = 120
# callgrind runs an app some fifty times slower, and slower still on a busy machine: the baked service's bounds on
# waiting for a connection or a query, meant for real time, would turn that into 503s. Their values change no code
# path, and the other contenders read neither.
UNDER_CALLGRIND = {"ACQUIRE_TIMEOUT": "300", "QUERY_TIMEOUT": "300"}


def count_all(valgrind: str, jobs: list, env_for, concurrency: int, requests: int, scratch: Path) -> dict:
    """Instructions per request of each (contender, path) in `jobs`, keyed by (contender name, path): one
    callgrind process each, as many at once as there are cores."""
    requests -= requests % concurrency  # whole batches

    def run(job):
        contender, path = job
        return round(count(valgrind, contender, env_for(contender), path, requests, concurrency, scratch) / requests)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return {(c.name, path): n for (c, path), n in zip(jobs, pool.map(run, jobs), strict=True)}


def table(contenders, paths: dict[str, str], per_request: dict, concurrency: int, requests: int) -> dict:
    """What results.json keeps of the counts: per endpoint (name: path), each contender's instructions a request."""
    return {
        "concurrency": concurrency,
        "requests": requests - requests % concurrency,
        "warmup": WARMUP,
        "endpoints": {
            endpoint: {"path": path, "per_request": {c.name: per_request[c.name, path] for c in contenders}}
            for endpoint, path in paths.items()
        },
    }


def count(valgrind: str, contender, env: dict, path: str, requests: int, concurrency: int, scratch: Path) -> int:
    """Instructions of `requests` requests after the warm-up, in one process under callgrind."""
    out = scratch / ("callgrind." + re.sub(r"\W", "_", f"{contender.name} {path}"))
    command = [
        valgrind,
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "--instr-atstart=no",  # the driver turns it on after the warm-up
        f"--zero-before={START}",
        f"--dump-before={END}",
        sys.executable,
        __file__,
        "drive",
        contender.app,
        str(contender.app_dir or ""),
        path,
        str(requests),
        str(concurrency),
    ]
    # From the empty scratch folder, as servers run: the baked service would read a stray .env.
    control = Path(valgrind).with_name("callgrind_control")
    done = subprocess.run(
        command,
        env={**env, **UNDER_CALLGRIND, "CALLGRIND_CONTROL": str(control)},
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    dump = Path(f"{out}.1")  # what was counted between the marks (the file without a number: what came after)
    totals = re.search(r"^totals: (\d+)", dump.read_text(), re.MULTILINE) if dump.exists() else None
    for written in (dump, out):
        written.unlink(missing_ok=True)
    if done.returncode != 0 or totals is None:
        # What went wrong is in its warnings, not in the access lines that fill the end of its output.
        warned = [line for line in done.stderr.splitlines() if '"level":"INFO"' not in line]
        raise RuntimeError(f"{contender.name} under callgrind exited {done.returncode}: " + "\n".join(warned[-40:]))
    return int(totals.group(1))


def drive(app_spec: str, app_dir: str, path: str, requests: int, concurrency: int) -> None:
    """Start the app's lifespan, make the requests, check every answer was a 200, and stop at once."""
    import uvloop  # as uvicorn runs every contender

    if app_dir:
        sys.path.insert(0, app_dir)
    module, _, name = app_spec.partition(":")
    app = getattr(importlib.import_module(module), name)
    uvloop.run(_drive(app, path, requests, concurrency))


def request_scope(route: str, query: bytes, headers: list, state: dict) -> dict:
    """The ASGI scope of a GET of `route` with `query`, from 127.0.0.1, as uvicorn gives it to an app."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": route,
        "raw_path": route.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": state,
    }


async def _drive(app, path: str, requests: int, concurrency: int) -> None:
    inbox, outbox = asyncio.Queue(), asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    state: dict = {}
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    running = asyncio.create_task(app(lifespan, inbox.get, outbox.put))
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"startup failed: {started}")

    route, _, query = path.partition("?")
    statuses: collections.Counter = collections.Counter()
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")]
    if os.environ.get("BENCH_AUTHORIZATION"):  # the baked service's token, sent to every contender alike
        headers.append((b"authorization", os.environ["BENCH_AUTHORIZATION"].encode()))

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    def scope():
        return request_scope(route, query.encode(), headers, state.copy())

    async def batches(requests: int) -> None:
        for _ in range(requests // concurrency):
            await asyncio.gather(*(app(scope(), receive, send) for _ in range(concurrency)))

    await batches(WARMUP)
    instrument()
    os.getloadavg()  # START: callgrind counts from here...
    await batches(requests)
    os.getsid(0)  # ...to here
    if set(statuses) != {200}:
        raise SystemExit(f"answers were not all 200: {dict(statuses)}")
    if running.done():
        raise SystemExit("the app's lifespan ended before its shutdown")
    sys.stdout.flush()
    os._exit(0)  # no shutdown: it is not counted, and slow under callgrind


def instrument() -> None:
    """Have callgrind instrument this process from now on (it started with `--instr-atstart=no`)."""
    control = subprocess.Popen(  # valgrind's own script, beside valgrind
        [os.environ["CALLGRIND_CONTROL"], "--instr=on", str(os.getpid())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # Busy, not blocked: callgrind reads the command between blocks of this process's code (through vgdb), so a
    # process asleep in waitpid would never take it.
    deadline = time.monotonic() + INSTRUMENT_TIMEOUT
    while control.poll() is None:
        if time.monotonic() > deadline:
            control.kill()
            raise SystemExit(f"callgrind_control did not answer in {INSTRUMENT_TIMEOUT} s")
    if control.returncode != 0:
        raise SystemExit(f"callgrind_control -i on failed: {control.stderr.read().decode()[-2000:]}")


if __name__ == "__main__":
    if sys.argv[1:2] != ["drive"] or len(sys.argv) != 7:
        raise SystemExit(__doc__)
    drive(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
