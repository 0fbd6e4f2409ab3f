"""Instructions per request, counted by valgrind's callgrind: the one figure here that a noisy machine cannot move.

Each contender's ASGI app runs in-process under callgrind, without uvicorn, HTTP or wrk: the same
requests through the app, its framework and its database driver, against the same Postgres. Two
runs differ only in how many requests they make, so the cost of one request is the difference in
instructions over the difference in requests; interpreter start, imports, the pool's connections
and the warm-up cancel out. Requests go `concurrency` at a time, as wrk's connections would.

    python bench/instructions.py drive MODULE:APP APP_DIR PATH REQUESTS CONCURRENCY   # what callgrind runs
"""

import asyncio
import collections
import importlib
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WARMUP = 64  # requests before the counted ones, in both runs: caches filled, statements prepared


def measure(
    valgrind: str,
    contenders,
    env_for,
    paths: dict[str, str],
    concurrency: int,
    requests: tuple[int, int],
    scratch: Path,
) -> dict:
    """Instructions per request of each contender on each of `paths` (name: path): two callgrind runs
    of each contender on each path, as many at once as there are cores."""
    small, large = (n - n % concurrency for n in requests)  # whole batches
    jobs = [(contender, endpoint, n) for endpoint in paths for contender in contenders for n in (small, large)]

    def run(job):
        contender, endpoint, n = job
        return count(valgrind, contender, env_for(contender), paths[endpoint], n, concurrency, scratch)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        counts = dict(zip(jobs, pool.map(run, jobs), strict=True))
    return {
        "concurrency": concurrency,
        "requests": [small, large],
        "endpoints": {
            endpoint: {
                "path": path,
                "counts": {c.name: [counts[c, endpoint, small], counts[c, endpoint, large]] for c in contenders},
                "per_request": {
                    c.name: round((counts[c, endpoint, large] - counts[c, endpoint, small]) / (large - small))
                    for c in contenders
                },
            }
            for endpoint, path in paths.items()
        },
    }


def count(valgrind: str, contender, env: dict, path: str, requests: int, concurrency: int, scratch: Path) -> int:
    """Instructions of one whole process that makes `requests` requests (after the warm-up)."""
    command = [
        valgrind,
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
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
    done = subprocess.run(command, env=env, cwd=scratch, capture_output=True, text=True, timeout=3600)
    collected = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or collected is None:
        raise RuntimeError(f"{contender.name} under callgrind exited {done.returncode}: {done.stderr[-2000:]}")
    return int(collected.group(1))


def drive(app_spec: str, app_dir: str, path: str, requests: int, concurrency: int) -> None:
    """Start the app's lifespan, make the requests, check every answer was a 200, and stop at once."""
    import uvloop  # as uvicorn runs every contender

    if app_dir:
        sys.path.insert(0, app_dir)
    module, _, name = app_spec.partition(":")
    app = getattr(importlib.import_module(module), name)
    uvloop.run(_drive(app, path, requests, concurrency))


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
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": route,
            "raw_path": route.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": state.copy(),
        }

    for batch in (WARMUP, requests):
        for _ in range(batch // concurrency):
            await asyncio.gather(*(app(scope(), receive, send) for _ in range(concurrency)))
    if set(statuses) != {200}:
        raise SystemExit(f"answers were not all 200: {dict(statuses)}")
    if running.done():
        raise SystemExit("the app's lifespan ended before its shutdown")
    sys.stdout.flush()
    os._exit(0)  # no shutdown: it would be the same in both runs, and slow under callgrind


if __name__ == "__main__":
    if sys.argv[1:2] != ["drive"] or len(sys.argv) != 7:
        raise SystemExit(__doc__)
    drive(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
