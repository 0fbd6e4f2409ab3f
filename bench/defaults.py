"""What each default of the baked service costs, priced within one process: the service as shipped, its access line
or its /metrics counting turned off by a signal (contenders/baked_toggled.py), and on again, round after round.

Two processes of the same code differ by up to 5 % on this VM (memory layout, hash seeds), as much as a default
costs, so comparing a process with the default against another without it says little. Here the same process
serves both halves of every round, in alternating order, and the ratio is taken within the round.
"""

import os
import signal
import time
from pathlib import Path

SWITCHES = {"access_log": signal.SIGUSR1, "metrics": signal.SIGUSR2}
SETTLE = 0.2  # seconds after a signal, so that no timed request was answered half one way


def measure(server, wrk_path: str, url: str, connections: int, core: int, script, rounds: int, duration: int) -> dict:
    """For each default: its share of a request, as 1 - (requests/s with it) / (requests/s without it), and the
    same for CPU per request, median and min-max over `rounds` rounds."""
    import load

    results = {}
    for name, signum in SWITCHES.items():
        runs, on = [], True
        for round_ in range(rounds):
            for want in (True, False) if round_ % 2 == 0 else (False, True):
                if want != on:
                    os.kill(server.pid, signum)
                    on = want
                    time.sleep(SETTLE)
                before = counted(server, name)
                run = load.measure(wrk_path, url, connections, duration, core, script, server.pid)
                time.sleep(SETTLE)  # the access lines' last batch written
                runs.append({"round": round_, "on": want, "counted": counted(server, name) - before, **run.to_json()})
        if not on:
            os.kill(server.pid, signum)  # as shipped again, for the next default
            time.sleep(SETTLE)
        pairs = [
            (
                next(r for r in runs if r["round"] == i and r["on"]),
                next(r for r in runs if r["round"] == i and not r["on"]),
            )
            for i in range(rounds)
        ]
        cpu = "cpu_us_per_request"
        results[name] = {
            "rounds": rounds,
            "runs": runs,
            "rps_share": load.spread([1 - on_["rps"] / off["rps"] for on_, off in pairs]),
            "cpu_share": load.spread([1 - off[cpu] / on_[cpu] for on_, off in pairs]),
            "cpu_us": load.spread([on_[cpu] - off[cpu] for on_, off in pairs]),
        }
    return results


def counted(server, default: str) -> int:
    """What the default has recorded so far of the timed requests: access lines in the server's log, or the
    requests to GET /users that /metrics counts. Shows that a signal really turned it off."""
    if default == "access_log":
        return Path(server.log.name).read_bytes().count(b'"message":"request","method":"GET","path":"/users"')
    status, body = server.get("/metrics")
    assert status == 200, body
    series = [
        line
        for line in body.decode().splitlines()
        if line.startswith("http_requests_total{") and 'route="/users"' in line
    ]
    return round(sum(float(line.rpartition(" ")[2]) for line in series))
