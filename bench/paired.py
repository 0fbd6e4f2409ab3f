"""The headline cell measured in pairs: every contender's server up at once and timed back to back in each round
(their ratios), and the service's defaults priced by turning each off and on in one process (defaults.py)."""

import contextlib
import os
from pathlib import Path

import contenders
import defaults
import load
from load import spread
from run import ENDPOINTS, HEADLINE, LOAD_CORE, POOL_SIZE, start_server


def paired_headline(chosen, dsn: str, scratch: Path, wrk_path: str, script: Path, rounds: int, duration: int) -> dict:
    """The headline cell again, for its ratios: every contender's server up at once (all on the
    server core; an idle one costs nothing), and each round times each of them back to back.

    A ratio is taken within a round, between runs seconds apart, so the drift of a noisy machine
    over minutes, which the rounds above spread across contenders, mostly cancels out.
    """
    endpoint, connections = HEADLINE
    runs = []
    with contextlib.ExitStack() as stack:
        servers = {
            c.name: stack.enter_context(start_server(c, {**os.environ, **c.env(dsn, POOL_SIZE)}, scratch))
            for c in chosen
        }
        for server in servers.values():
            server.wait_ready(ENDPOINTS[endpoint])
            load.wrk(wrk_path, server.url(ENDPOINTS[endpoint]), connections, 1, LOAD_CORE, script)
        for round_ in range(rounds):
            shift = round_ % len(chosen)
            for contender in chosen[shift:] + chosen[:shift]:
                server = servers[contender.name]
                run = load.measure(
                    wrk_path, server.url(ENDPOINTS[endpoint]), connections, duration, LOAD_CORE, script, server.pid
                )
                runs.append({"round": round_, "contender": contender.name, **run.to_json()})
    by_round = {(r["round"], r["contender"]): r for r in runs}
    baked = contenders.BAKED.name
    ratios_ = {
        c.name: {
            "rps": spread([by_round[i, baked]["rps"] / by_round[i, c.name]["rps"] for i in range(rounds)]),
            "cpu": spread(
                [
                    by_round[i, c.name]["cpu_us_per_request"] / by_round[i, baked]["cpu_us_per_request"]
                    for i in range(rounds)
                ]
            ),
        }
        for c in chosen
        if c.name != baked and baked in servers
    }
    print(f"paired headline, {rounds} rounds: baked vs each (rps, CPU): ", end="")
    print(", ".join(f"{name} {r['rps']['median']:.2f}x {r['cpu']['median']:.2f}x" for name, r in ratios_.items()))
    return {"endpoint": endpoint, "connections": connections, "rounds": rounds, "runs": runs, "ratios": ratios_}


def price_defaults(dsn: str, scratch: Path, wrk_path: str, script: Path, rounds: int, duration: int) -> dict:
    """The access line's and /metrics' share of a request in the headline cell, each turned off and on in one
    process of the service as shipped (defaults.py)."""
    endpoint, connections = HEADLINE
    toggled = contenders.BAKED_TOGGLED
    with start_server(toggled, {**os.environ, **toggled.env(dsn, POOL_SIZE)}, scratch) as server:
        server.wait_ready(ENDPOINTS[endpoint])
        load.wrk(wrk_path, server.url(ENDPOINTS[endpoint]), connections, 1, LOAD_CORE, script)
        priced = defaults.measure(
            server, wrk_path, server.url(ENDPOINTS[endpoint]), connections, LOAD_CORE, script, rounds, duration
        )
    print("defaults priced in one process (share of a request, rps and CPU): ", end="")
    print(
        ", ".join(
            f"{name} {d['rps_share']['median']:.1%} {d['cpu_share']['median']:.1%}" for name, d in priced.items()
        ),
        flush=True,
    )
    return priced
