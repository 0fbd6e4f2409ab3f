"""One read replica: the baked service with a streaming standby of the bench's database taking its reads, against
the same service with none, in paired rounds of the headline cell (GET /users?limit=20, 32 connections).

    python bench/replica.py [--rounds 9] [--duration 3] [--out bench/results]

It bakes and installs the template's defaults as run.py does (bench/.venv), starts the bench's Postgres (pgserver,
ROWS users), makes a standby of it with pg_basebackup -R (streaming, hot standby, unix socket) and starts it, then
serves the service twice at once, both pinned to the server core: as shipped, and with DATABASE_REPLICA_URLS naming
the standby. Each round times each for `duration` seconds back to back with wrk, in alternating order; the ratios
(one replica over none) are taken within a round. wrk, the primary and the standby share the load core, as the
bench's one Postgres does: on two cores the standby adds no capacity, and what the ratio shows is what sending the
reads to a replica costs the service. /metrics says which server answered the reads. Results: results/replica.json
and results/replica.md. Not in the smoke run.
"""

import argparse
import contextlib
import importlib
import json
import os
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path

import prepare
from standby import Standby, fetchval

# Transactions committed in the bench's database, as the server asked counts them: a standby counts its own reads.
COMMITS = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
STANDBY_PORT = 5433  # its own socket file in its own folder; the primary's is 5432, pgserver's default


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9, help="paired rounds (default 9)")
    parser.add_argument("--duration", type=int, default=3, help="seconds each server is timed in a round (default 3)")
    parser.add_argument("--counts", type=int, default=2, help="callgrind counts of each (default 2; 0: none)")
    parser.add_argument("--out", default=str(prepare.BENCH / "results"), help="where results go (bench/results)")
    args = parser.parse_args()
    if not prepare.in_venv():
        python = prepare.ensure_venv()
        os.execv(python, [str(python), __file__, *sys.argv[1:]])
    import contenders
    import database
    import run

    wrk_path = prepare.ensure_debian_command("wrk")
    valgrind = prepare.ensure_debian_command("valgrind") if args.counts else ""
    project = prepare.bake_and_install(Path(sys.executable))
    importlib.invalidate_caches()
    migrations = importlib.import_module(f"{prepare.PACKAGE}.migrate").MIGRATIONS
    print(f"replica: baked {project}", flush=True)
    primary = database.prepare(prepare.WORK / "pgdata", run.LOAD_CORE, migrations)
    os.environ.update({"TOKEN_SECRET": secrets.token_urlsafe(32), "TOKEN_TTL": "86400"})
    scratch = Path(tempfile.mkdtemp(prefix="bench-replica-"))
    standby = Standby(prepare.WORK / "pgdata", prepare.WORK / "standby", STANDBY_PORT)
    try:
        replica_dsn = standby.start(primary, run.LOAD_CORE)
        print(f"replica: standby streaming, {fetchval(replica_dsn, 'SELECT count(*) FROM users'):,} users", flush=True)
        none = contenders.BAKED
        one = contenders.Contender(
            "baked_one_replica",
            "baked service, one replica",
            none.app,
            None,
            (("DATABASE_REPLICA_URLS", replica_dsn),),
            contenders.EDGE,
        )
        paired = timed(none, one, primary, scratch, wrk_path, args)
        # The same service with GET /users on db.fetch, not db.replica(req): what offering a read costs with none.
        primary_only = contenders.Contender(
            "baked_primary_only",
            "GET /users on db.fetch",
            "baked_primary_only:app",
            contenders.HERE,
            http=contenders.EDGE,
        )
        counted = count(valgrind, (none, primary_only, one), primary, replica_dsn, scratch, args.counts)
    finally:
        standby.stop()
    results = summarize(paired, counted, none.name, one.name, args, wrk_path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "replica.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "replica.md").write_text(markdown(results))
    print(markdown(results))
    return 1 if results["errors"] else 0


def timed(none, one, primary: str, scratch: Path, wrk_path: str, args) -> dict:
    """Both services up at once; each round times each, back to back, in alternating order."""
    import load
    import run
    import signin

    with contextlib.ExitStack() as stack:
        servers = {
            c.name: stack.enter_context(run.start_server(c, {**os.environ, **c.env(primary, run.POOL_SIZE)}, scratch))
            for c in (none, one)
        }
        for server in servers.values():
            server.wait_ready("/health")
        os.environ["BENCH_AUTHORIZATION"] = signin.admin_token(servers[none.name].url(""), primary)
        script = load.write_script(scratch, os.environ["BENCH_AUTHORIZATION"])
        wait_replica_ok(servers[one.name])
        path, connections = run.ENDPOINTS[run.HEADLINE[0]], run.HEADLINE[1]
        for server in servers.values():  # warm: both pools filled, code paths hot
            load.wrk(wrk_path, server.url(path), connections, 1, run.LOAD_CORE, script)
        before = replica_reads(servers[one.name])
        loads, runs = [os.getloadavg()[0]], []
        for round_ in range(args.rounds):
            for contender in (none, one) if round_ % 2 == 0 else (one, none):
                server = servers[contender.name]
                measured = load.measure(
                    wrk_path, server.url(path), connections, args.duration, run.LOAD_CORE, script, server.pid
                )
                runs.append({"round": round_, "contender": contender.name, **measured.to_json()})
                print(
                    f"round {round_ + 1}/{args.rounds} {contender.name:<18} {measured.rps:>7.0f} rps "
                    f"{measured.cpu_us_per_request:6.0f} \u00b5s CPU/req",
                    flush=True,
                )
            loads.append(os.getloadavg()[0])
        after = replica_reads(servers[one.name])
    served = {key: after.get(key, 0) - before.get(key, 0) for key in ("replica", "primary")}
    return {"runs": runs, "load_average_1m": [round(x, 2) for x in loads], "reads": served}


def count(valgrind: str, chosen, primary: str, replica_dsn: str, scratch: Path, repeats: int) -> list[dict]:
    """Instructions a request of each of `chosen` (callgrind, instructions.py: 960 requests 32 at a time after a
    warm-up), `repeats` times, the contenders of a repeat counted side by side; with the transactions the standby
    committed meanwhile, which says the reads of the one with a replica went there."""
    import instructions
    import run

    path, concurrency = run.ENDPOINTS[run.HEADLINE[0]], run.HEADLINE[1]
    counts = []
    for repeat in range(repeats):
        before = fetchval(replica_dsn, COMMITS)
        per_request = instructions.count_all(
            valgrind,
            [(c, path) for c in chosen],
            lambda c: {**os.environ, **c.env(primary, run.POOL_SIZE)},
            concurrency,
            run.INSTRUCTION_REQUESTS,
            scratch,
        )
        time.sleep(1)  # the standby's backends report their counts as they end, with the counted processes
        standby_commits = fetchval(replica_dsn, COMMITS) - before
        counts.append({"repeat": repeat, **{c.name: per_request[c.name, path] for c in chosen}})
        counts[-1]["standby_commits"] = standby_commits
        print(f"replica: counted {counts[-1]}", flush=True)
    return counts


def wait_replica_ok(server, within: float = 20.0) -> None:
    """Until the service's /health shows its replica ok (answering, replayed all it received)."""
    deadline = time.monotonic() + within
    while True:
        status, body = server.get("/health")
        replicas = json.loads(body).get("replicas") or [{}]
        if status == 200 and replicas[0].get("status") == "ok":
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"replica: the service's replica is not ok within {within} s: {body!r}")
        time.sleep(0.2)


def replica_reads(server) -> dict[str, float]:
    """The reads offered to the replica so far, by what served them (/metrics' db_replica_reads_total)."""
    _, body = server.get("/metrics")
    found = re.findall(r'^db_replica_reads_total\{served_by="(\w+)"\} (\S+)$', body.decode(), re.MULTILINE)
    return {served_by: float(value) for served_by, value in found}


def summarize(paired: dict, counted: list[dict], none: str, one: str, args, wrk_path: str) -> dict:
    import database
    import run
    from load import spread

    runs = paired["runs"]
    by = {(r["round"], r["contender"]): r for r in runs}
    rounds = range(args.rounds)
    return {
        "machine": run.machine(wrk_path),
        "load_average_1m": paired["load_average_1m"],
        "config": {
            "endpoint": run.ENDPOINTS[run.HEADLINE[0]],
            "connections": run.HEADLINE[1],
            "rounds": args.rounds,
            "seconds_per_run": args.duration,
            "pool_size": run.POOL_SIZE,
            "rows": database.ROWS,
            "server_core": run.SERVER_CORE,
            "load_core": run.LOAD_CORE,
            "pinning": "both services on the server core; wrk, the primary and the standby on the load core",
            "standby": "pg_basebackup -R of the bench's database, streaming (asynchronous), hot standby, unix socket",
        },
        "runs": runs,
        "median": {
            name: {
                "rps": spread([by[i, name]["rps"] for i in rounds]),
                "cpu_us_per_request": spread([by[i, name]["cpu_us_per_request"] for i in rounds]),
            }
            for name in (none, one)
        },
        "ratio_one_replica_to_none": {
            "rps": spread([by[i, one]["rps"] / by[i, none]["rps"] for i in rounds]),
            "cpu_us_per_request": spread(
                [by[i, one]["cpu_us_per_request"] / by[i, none]["cpu_us_per_request"] for i in rounds]
            ),
        },
        # Counted by the service itself, over the timed runs (the warm-ups outside).
        "reads_offered_to_the_replica": {
            **paired["reads"],
            "timed_requests": sum(r["requests"] for r in runs if r["contender"] == one),
        },
        "instructions": {
            "path": run.ENDPOINTS[run.HEADLINE[0]],
            "concurrency": run.HEADLINE[1],
            "requests": run.INSTRUCTION_REQUESTS,
            "counts": counted,
        },
        "errors": sum(r["errors"] for r in runs),
    }


def markdown(results: dict) -> str:
    config, machine = results["config"], results["machine"]
    ratio, median = results["ratio_one_replica_to_none"], results["median"]
    reads = results["reads_offered_to_the_replica"]
    lines = [
        f"# One read replica: GET {config['endpoint']} at {config['connections']} connections",
        "",
        f"{machine['date']}, {machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, "
        f"{machine['postgres']}; {config['rows']:,} users, pool {config['pool_size']}, "
        f"{config['rounds']} paired rounds of {config['seconds_per_run']} s; {config['pinning']}. "
        f"Load average (1 min) over the rounds: {min(results['load_average_1m'])}-{max(results['load_average_1m'])}.",
        "",
        "| | requests/s (median, min-max) | CPU per request, µs |",
        "|---|---:|---:|",
    ]
    for name, shown in median.items():
        rps, cpu = shown["rps"], shown["cpu_us_per_request"]
        lines.append(
            f"| {name} | {rps['median']:,.0f} ({rps['min']:,.0f}-{rps['max']:,.0f}) | "
            f"{cpu['median']:,.0f} ({cpu['min']:,.0f}-{cpu['max']:,.0f}) |"
        )
    r, c = ratio["rps"], ratio["cpu_us_per_request"]
    lines += [
        f"| one replica / none, within each round | **{r['median']:.2f}x** ({r['min']:.2f}-{r['max']:.2f}) | "
        f"{c['median']:.2f}x ({c['min']:.2f}-{c['max']:.2f}) |",
        "",
        f"Reads the service offered the replica during the rounds: {reads['replica']:,.0f} served by the replica, "
        f"{reads['primary']:,.0f} by the primary, of {reads['timed_requests']:,} timed requests. "
        f"Errors: {results['errors']}.",
        "",
    ]
    counts = results["instructions"]["counts"]
    if counts:
        names = [key for key in counts[0] if key not in ("repeat", "standby_commits")]
        lines += [
            f"Instructions a request (callgrind, {results['instructions']['requests']} requests "
            f"{results['instructions']['concurrency']} at a time, each count's contenders side by side):",
            "",
            "| count | " + " | ".join(names) + " | standby's commits meanwhile |",
            "|---|" + "---:|" * (len(names) + 1),
        ]
        for each in counts:
            lines.append(
                f"| {each['repeat'] + 1} | "
                + " | ".join(f"{each[n]:,}" for n in names)
                + f" | {each['standby_commits']:,} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
