"""The benchmark: the baked service against minimal Heaven, raw ASGI, FastAPI + asyncpg and FastAPI + SQLAlchemy.

    python bench/run.py            # full: every cell, several rounds (about 24 minutes)
    python bench/run.py --smoke    # seconds per contender, one round, two cells

It creates bench/.venv the first time, bakes and installs the template's default project, starts
one Postgres, then serves each contender as one uvicorn worker pinned to core 1 while wrk and
Postgres share core 0. Each contender must answer byte-identical JSON before it is timed, and a
run with any error counts as a failure, not as a fast run. Last, callgrind counts each contender's
instructions per request on every endpoint, the one figure machine noise cannot move.
Results go to bench/results/.
"""

import argparse
import asyncio
import importlib
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

import machine
import prepare
from load import spread

SERVER_CORE, LOAD_CORE = 1, 0
POOL_SIZE = 10
ENDPOINTS = {
    "limit=1": "/users?limit=1",
    "limit=20": "/users?limit=20",
    "limit=100": "/users?limit=100",
    "by id": "/users/4242",
}
CONNECTIONS = (1, 32, 128)
SMOKE_CELLS = (("limit=20", 32), ("by id", 1))
SMOKE_COUNTED = {"baked", "baked_quiet", "floor"}  # contenders.BAKED, BAKED_QUIET and FLOOR
# Compared byte for byte before any timing: the timed paths, plus a page near the end and the last row.
AGREEMENT_PATHS = (*ENDPOINTS.values(), "/users?limit=7&after=9995", "/users/10000")
HEADLINE = ("limit=20", 32)  # the cell the targets are stated for
# Requests counted by callgrind in each contender's process, after its warm-up (instructions.py).
INSTRUCTION_REQUESTS, INSTRUCTION_REQUESTS_SMOKE = 960, 64


def main() -> int:
    args = parse_args()
    if not (args.here or prepare.in_venv()):
        python = prepare.ensure_venv()
        os.execv(python, [str(python), __file__, *sys.argv[1:]])

    # Only now, inside the venv, can the rest of the harness be imported.
    import agreement
    import contenders
    import database
    import instructions
    import load
    import micro_bind
    import paired
    import report
    import signin
    import summary

    started = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    wrk_path = prepare.ensure_debian_command("wrk")  # the load generator
    valgrind = prepare.ensure_debian_command("valgrind")  # its callgrind counts instructions
    project = prepare.bake_and_install(Path(sys.executable))
    importlib.invalidate_caches()
    migrations = importlib.import_module(f"{prepare.PACKAGE}.migrate").MIGRATIONS
    print(f"bench: baked {project}", flush=True)

    dsn = database.prepare(prepare.WORK / "pgdata", LOAD_CORE, migrations)
    # The baked service signs tokens with a secret of its own, as a bake's .env gives it; they outlive any run.
    os.environ.update({"TOKEN_SECRET": secrets.token_urlsafe(32), "TOKEN_TTL": "86400"})
    with start_server(contenders.BAKED, {**os.environ, **contenders.BAKED.env(dsn, POOL_SIZE)}, scratch) as server:
        server.wait_ready("/health")
        # Measured as shipped: every request to it carries an admin's token (and, alike, to every other contender).
        os.environ["BENCH_AUTHORIZATION"] = signin.admin_token(server.url(""), dsn)
    script = load.write_script(scratch, os.environ["BENCH_AUTHORIZATION"])
    rounds = 1 if args.smoke else args.rounds
    duration = 1 if args.smoke else args.duration
    warmup = 1 if args.smoke else args.warmup
    cells = SMOKE_CELLS if args.smoke else [(e, c) for e in ENDPOINTS for c in CONNECTIONS]
    if args.cell:
        cells = [(endpoint, int(connections)) for endpoint, _, connections in (c.rpartition("@") for c in args.cell)]
    chosen = [c for c in contenders.CONTENDERS if not args.only or c.name in args.only.split(",")]

    answers: dict[str, dict[str, str]] = {}
    bodies: dict[str, dict[str, bytes]] = {}
    runs = []
    for round_ in range(rounds):
        # Rotate the order every round so that no contender always runs first (cold caches) or last.
        shift = round_ % len(chosen)
        order = chosen[shift:] + chosen[:shift]
        for contender in order:
            env = {**os.environ, **contender.env(dsn, POOL_SIZE)}
            with start_server(contender, env, scratch) as server:
                server.wait_ready(ENDPOINTS["by id"])
                bodies[contender.name] = {path: agreement.fetch_ok(server, path) for path in AGREEMENT_PATHS}
                answers[contender.name] = {
                    path: agreement.sha256(body) for path, body in bodies[contender.name].items()
                }
                for endpoint in dict(cells):
                    load.wrk(wrk_path, server.url(ENDPOINTS[endpoint]), 32, warmup, LOAD_CORE, script)
                for endpoint, connections in cells:
                    run = load.measure(
                        wrk_path, server.url(ENDPOINTS[endpoint]), connections, duration, LOAD_CORE, script, server.pid
                    )
                    runs.append(
                        {
                            "round": round_,
                            "contender": contender.name,
                            "endpoint": endpoint,
                            "connections": connections,
                            **run.to_json(),
                        }
                    )
                    flag = f"  ERRORS {run.error_kinds}" if run.errors else ""
                    print(
                        f"round {round_ + 1}/{rounds} {contender.name:<19} {endpoint:<9} c={connections:<3} "
                        f"{run.rps:>8.0f} rps  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  "
                        f"{run.cpu_us_per_request:6.0f} \u00b5s CPU/req{flag}",
                        flush=True,
                    )

    pairs = paired.paired_headline(
        chosen,
        dsn,
        scratch,
        wrk_path,
        script,
        rounds=1 if args.smoke else args.paired_rounds,
        duration=duration,
    )
    defaults_ = paired.price_defaults(
        dsn, scratch, wrk_path, script, rounds=1 if args.smoke else args.paired_rounds, duration=duration
    )
    mismatches = agreement.agree(bodies, contenders.BAKED.name)
    cold = cold_start(
        contenders.BAKED, {**os.environ, **contenders.BAKED.env(dsn, POOL_SIZE)}, scratch, times=1 if args.smoke else 5
    )
    micro = asyncio.run(
        micro_bind.measure(dsn, sizes=(100,) if args.smoke else micro_bind.SIZES, repeat=3 if args.smoke else 25)
    )
    # Every endpoint, at the headline's concurrency; at the headline, each default off (against the service as
    # shipped) and the route public (what the sign-in check costs). All in one pool of callgrind processes, one a
    # core. The smoke mode only checks that counting works: on the baked service (as shipped and with its defaults
    # off) and the floor, not on each comparison app (the same counting, 20 s or so of callgrind each on the 2-core
    # CI machine); their answers are checked above all the same.
    headline_path = ENDPOINTS[HEADLINE[0]]
    paths = {HEADLINE[0]: headline_path} if args.smoke else ENDPOINTS
    counted_contenders = [c for c in chosen if c.name in SMOKE_COUNTED] if args.smoke else chosen
    jobs = [(contender, path) for path in paths.values() for contender in counted_contenders]
    jobs += [(contender, headline_path) for contender in (*contenders.DEFAULT_OFF.values(), contenders.BAKED_PUBLIC)]
    per_request = instructions.count_all(
        valgrind,
        jobs,
        lambda contender: {**os.environ, **contender.env(dsn, POOL_SIZE)},
        HEADLINE[1],
        INSTRUCTION_REQUESTS_SMOKE if args.smoke else INSTRUCTION_REQUESTS,
        scratch,
    )
    counted = instructions.table(
        counted_contenders,
        paths,
        per_request,
        HEADLINE[1],
        INSTRUCTION_REQUESTS_SMOKE if args.smoke else INSTRUCTION_REQUESTS,
    )
    # Each default's instructions: the service as shipped against itself with that default off.
    shipped = per_request[contenders.BAKED.name, headline_path]
    for name, contender in contenders.DEFAULT_OFF.items():
        cost = shipped - per_request[contender.name, headline_path]
        defaults_[name].update(instructions=cost, instruction_share=round(cost / shipped, 4))
    sign_in = signin.measure(
        {**os.environ, **contenders.BAKED.env(dsn, POOL_SIZE)},
        headline_path,
        HEADLINE[1],
        signed_in=shipped,
        public=per_request[contenders.BAKED_PUBLIC.name, headline_path],
        scratch=scratch,
    )
    print(
        f"sign-in check: {sign_in['check_instructions']:,} instructions a request "
        f"({sign_in['check_share']:.1%} of GET {sign_in['path']}), {sign_in['check_us']} \u00b5s "
        f"({sign_in['first_check_us']} \u00b5s for a token the process has not seen yet); argon2 "
        f"{sign_in['argon2']}: hash {sign_in['argon2_hash_ms']} ms, verify {sign_in['argon2_verify_ms']} ms",
        flush=True,
    )
    summarized = summary.summarize(runs)
    results = {
        "machine": machine.describe(wrk_path),
        "config": {
            "smoke": args.smoke,
            "rounds": rounds,
            "seconds_per_run": duration,
            "warmup_seconds": warmup,
            "pool_size": POOL_SIZE,
            "server_core": SERVER_CORE,
            "load_core": LOAD_CORE,
            "rows": database.ROWS,
            "endpoints": ENDPOINTS,
            "headline": {"endpoint": HEADLINE[0], "connections": HEADLINE[1]},
        },
        "contenders": {c.name: c.label for c in chosen},
        "agreement": {"identical": not mismatches, "mismatches": mismatches, "sha256": answers},
        "runs": runs,
        "summary": summarized,
        "ratios": summary.ratios(summarized, contenders),
        "paired": pairs,
        "defaults": defaults_,
        "cold_start_seconds": cold,
        "micro_bind_ms": micro,
        "instructions": counted,
        "sign_in": sign_in,
        "errors": sum(run["errors"] for run in runs)
        + sum(run["errors"] for run in pairs["runs"])
        + sum(run["errors"] for default in defaults_.values() for run in default["runs"]),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report.write(results, out)
    print(report.ratios_text(results))
    print(f"bench: wrote {out}/results.json, results.md, chart.png in {results['wall_seconds']} s")
    if mismatches:
        print(f"bench: FAILED, answers differ: {mismatches}", file=sys.stderr)
    if results["errors"]:
        print(f"bench: FAILED, {results['errors']} errors: those runs are invalid", file=sys.stderr)
    return 1 if mismatches or results["errors"] else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few seconds per contender: checks, not figures")
    parser.add_argument("--out", default=str(prepare.BENCH / "results"), help="where results go (bench/results)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paired-rounds", type=int, default=9, help="rounds of the paired headline (default 9)")
    # wrk takes whole seconds.
    parser.add_argument("--duration", type=int, default=3, help="seconds per timed run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of load per endpoint before timing")
    parser.add_argument("--only", help="comma-separated contenders, e.g. baked,heaven_minimal (default: all)")
    parser.add_argument("--cell", action="append", help="ENDPOINT@CONNECTIONS, e.g. 'limit=20@32'; repeatable")
    parser.add_argument("--here", action="store_true", help="use this interpreter instead of bench/.venv")
    return parser.parse_args()


def start_server(contender, env: dict, scratch: Path):
    from servers import Server

    return Server(contender, free_port(), SERVER_CORE, env, scratch)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cold_start(contender, env: dict, scratch: Path, times: int) -> dict:
    """Seconds from process start to the first 200 on /health, `times` times."""
    seconds = []
    for _ in range(times):
        with start_server(contender, env, scratch) as server:
            seconds.append(round(server.wait_ready("/health"), 3))
    return {"path": "/health", "contender": contender.name, **spread(seconds), "each": seconds}


if __name__ == "__main__":
    sys.exit(main())
