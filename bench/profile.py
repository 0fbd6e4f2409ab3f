"""Where the baked service's instructions go beyond the floor's, layer by layer, counted by callgrind.

    python bench/profile.py           # bakes, starts Postgres, prints a markdown table (a few minutes)
    python bench/profile.py --spy     # instead, py-spy's samples of the service and the floor under wrk's load

One process runs under callgrind, the service started as uvicorn would start it; each layer of a request
(header decoding, routing, the token check...) then runs N times in a row with the objects the headline
request (GET /users?limit=20, an admin's token) gives it. Callgrind writes its count at each call of
os.getppid(), which marks where one layer's loop ends and the next begins (--dump-before), so a layer's
instructions are its loop's count over N, less an empty loop's. Whole requests are counted the same way, one
at a time, through the service and through the floor (contenders/floor.py); and the coroutines of the service's
request nested, each with all it awaits, from the App down to the query, so that each one's own share is the
difference from the next. Results: bench/results/profile.md.
"""

import argparse
import collections
import importlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import prepare
from layers import PATH, QUERY, N


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spy", action="store_true", help="sample the served service and the floor with py-spy")
    args = parser.parse_args()
    if not prepare.in_venv():
        python = prepare.ensure_venv()
        os.execv(python, [str(python), __file__, *sys.argv[1:]])
    import contenders
    import database
    import load
    import run
    import signin

    valgrind = prepare.ensure_debian_command("valgrind")
    prepare.bake_and_install(Path(sys.executable))
    importlib.invalidate_caches()
    migrations = importlib.import_module(f"{prepare.PACKAGE}.migrate").MIGRATIONS
    dsn = database.prepare(prepare.WORK / "pgdata", run.LOAD_CORE, migrations)
    os.environ.update({"TOKEN_SECRET": secrets.token_urlsafe(32), "TOKEN_TTL": "86400"})
    scratch = Path(tempfile.mkdtemp(prefix="profile-"))
    env = {**os.environ, **contenders.BAKED.env(dsn, run.POOL_SIZE)}
    with run.start_server(contenders.BAKED, env, scratch) as server:
        server.wait_ready("/health")
        os.environ["BENCH_AUTHORIZATION"] = signin.admin_token(server.url(""), dsn)
    env["BENCH_AUTHORIZATION"] = os.environ["BENCH_AUTHORIZATION"]
    if not args.spy:
        print(table(count(valgrind, env, scratch)))
    else:
        wrk_path = prepare.ensure_debian_command("wrk")
        script = load.write_script(scratch, os.environ["BENCH_AUTHORIZATION"])
        for contender in (contenders.BAKED, contenders.FLOOR):
            print(spy(contender, {**os.environ, **contender.env(dsn, run.POOL_SIZE)}, scratch, wrk_path, script))
    return 0


def count(valgrind: str, env: dict, scratch: Path) -> list[tuple[str, float]]:
    """Each layer's instructions per call: one callgrind run of layers.py, cut at its markers."""
    out = scratch / "callgrind.out"
    done = subprocess.run(
        [
            valgrind,
            "--tool=callgrind",
            "--dump-before=getppid",  # libc's, which os.getppid() calls: found in a stripped Python too
            f"--callgrind-out-file={out}",
            sys.executable,
            str(Path(__file__).with_name("layers.py")),
        ],
        env=env,
        cwd=scratch,  # no stray .env
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the layers under callgrind exited {done.returncode}: {done.stderr[-3000:]}")
    names = [line.split("\t", 1)[1] for line in done.stdout.splitlines() if line.startswith("layer\t")]
    parts = sorted(scratch.glob("callgrind.out.*"), key=lambda p: int(p.name.rpartition(".")[2]))
    totals = [int(re.search(r"^(?:summary|totals): (\d+)", p.read_text(), re.M).group(1)) for p in parts]
    # The first part runs up to the first marker (start-up); part i + 1 is layer i's loop.
    per_call = dict(zip(names, (total / N for total in totals[1:]), strict=False))
    empty, empty_async = per_call.pop("empty loop"), per_call.pop("empty loop, awaited")
    return [(name, value - (empty_async if name.endswith("(awaited)") else empty)) for name, value in per_call.items()]


def table(layers: list[tuple[str, float]]) -> str:
    lines = ["| layer | instructions a call |", "|---|---:|"]
    lines += [f"| {name} | {value:,.0f} |" for name, value in layers]
    return "\n".join(lines)


def spy(contender, env: dict, scratch: Path, wrk_path: str, script: Path, seconds: int = 12) -> str:
    """py-spy's samples of `contender` served under wrk's load (32 connections), as each function's inclusive
    share of the samples, the top 40."""
    import load
    import run

    spy_path = shutil.which("py-spy")
    if spy_path is None:
        return "py-spy is not installed: pip install py-spy"
    raw = scratch / f"{contender.name}.spy"
    with run.start_server(contender, env, scratch) as server:
        url = server.url(f"{PATH}?{QUERY.decode()}")
        server.wait_ready(f"{PATH}?{QUERY.decode()}")
        load.wrk(wrk_path, url, 32, 1, run.LOAD_CORE, script)
        command = [spy_path, "record", "-r", "500", "-d", str(seconds), "-f", "raw", "-o", str(raw)]
        sampling = subprocess.Popen([*command, "--nonblocking", "--pid", str(server.pid)], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        load.measure(wrk_path, url, 32, seconds - 1, run.LOAD_CORE, script, server.pid)
        sampling.wait(60)
    total, inclusive = 0, collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        total += int(samples)
        for frame in {re.sub(r" \((?:.*/)?([^/:]+):\d+\)$", r" (\1)", f) for f in stack.split(";")}:
            inclusive[frame] += int(samples)
    lines = [f"{contender.label}: {total} samples, inclusive share of each function", ""]
    lines += [f"{100 * n / total:5.1f} %  {frame}" for frame, n in inclusive.most_common(40)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
