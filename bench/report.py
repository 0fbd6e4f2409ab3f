"""results.json as people read it: results.md (tables) and chart.png (the headline at a glance)."""

from pathlib import Path

import micro_bind
from load import spread


def write(results: dict, out: Path) -> None:
    import chart  # it reads results with this module's helpers

    (out / "results.md").write_text(markdown(results))
    chart.chart(results, out / "chart.png")


def cell(results: dict, contender: str, endpoint: str, connections: int) -> dict | None:
    return next(
        (
            s
            for s in results["summary"]
            if (s["contender"], s["endpoint"], s["connections"]) == (contender, endpoint, connections)
        ),
        None,
    )


def floor_of(results: dict) -> str:
    """The contender the others are measured against: the floor (raw ASGI, no reset) when it ran, else raw ASGI."""
    return "floor" if "floor" in results["contenders"] else "raw"


def headline(results: dict) -> tuple[str, int]:
    return results["config"]["headline"]["endpoint"], results["config"]["headline"]["connections"]


def ratios_text(results: dict) -> str:
    """The baked service and every other contender against the floor, in the headline cell."""
    endpoint, connections = headline(results)
    lowest = floor_of(results)
    floor = cell(results, lowest, endpoint, connections)
    if floor is None:
        return "bench: the headline cell was not measured"
    path = results["config"]["endpoints"][endpoint]
    counted = results["instructions"]["endpoints"][endpoint]["per_request"]
    lines = [f"against {results['contenders'][lowest]}, GET {path} at {connections} connections:"]
    for name, label in results["contenders"].items():
        s = cell(results, name, endpoint, connections)
        if s:
            # A smoke run counts the instructions of a few contenders only.
            versus = (
                f", {counted[name] / counted[lowest]:5.2f}x its instructions per request"
                if name in counted and lowest in counted
                else ""
            )
            lines.append(
                f"  {label:<27} {s['rps']['median'] / floor['rps']['median']:5.2f}x the floor's rps, "
                f"{s['cpu_us_per_request']['median'] / floor['cpu_us_per_request']['median']:5.2f}x its CPU "
                f"per request{versus}"
            )
    paired = results["paired"]["ratios"]
    lines.append(
        f"the baked service against each (above 1: it does better), in {results['paired']['rounds']} paired rounds "
        "(median rps and CPU ratios) and by instructions per request:"
    )
    lines += [
        f"  {label:<27} {paired[name]['rps']['median']:5.2f}x rps  {paired[name]['cpu']['median']:5.2f}x CPU  "
        f"{counted[name] / counted['baked']:5.2f}x instructions"
        for name, label in results["contenders"].items()
        if name in paired and name in counted
    ]
    return "\n".join(lines)


def fmt(spread: dict, digits: int = 0) -> str:
    return f"{spread['median']:,.{digits}f} ({spread['min']:,.{digits}f}-{spread['max']:,.{digits}f})"


def ratio(top: dict | None, bottom: dict | None, metric: str) -> str:
    if top is None or bottom is None or top is bottom:
        return "—"
    return f"{top[metric]['median'] / bottom[metric]['median']:.2f}x"


def markdown(results: dict) -> str:
    import costs  # its tables read results with this module's helpers

    config, machine, labels = results["config"], results["machine"], results["contenders"]
    endpoint, connections = headline(results)
    baked = cell(results, "baked", endpoint, connections)
    floor = cell(results, floor_of(results), endpoint, connections)
    out = [
        "# Benchmark results",
        "",
        f"{machine['date']} · {machine['cpu']}, {machine['cores']} cores · Python {machine['python']} · "
        f"{machine['wrk']} · {machine['postgres']} (Postgres 16)",
        "",
        f"{config['rounds']} round(s) of {config['seconds_per_run']:g} s per cell, order rotated each round; medians "
        f"with min-max. One uvicorn worker (uvloop, httptools, the baked service's under the edge's limits, "
        f"no access log) on core {config['server_core']}; "
        f"wrk (1 thread) and Postgres on core {config['load_core']}; pool size {config['pool_size']} for every "
        f"contender; {config['rows']:,} rows. CPU is the server process's user+system time per request.",
        "",
        f"Answers byte-identical across contenders: **{'yes' if results['agreement']['identical'] else 'NO'}**. "
        f"Errors (non-2xx or socket) in any run: **{results['errors']}**.",
        "",
        "The ratios between contenders are the paired runs' and the instruction counts, which cancel or do not "
        "see the machine's drift; the rounds' medians are each contender's own figures, and a ratio of two of "
        "them, taken minutes apart, carries the drift (10-30 % on a noisy VM).",
        "",
        *paired_table(results),
        "",
        *costs.defaults_table(results),
        "",
        *costs.instructions_table(results),
        "",
        *costs.sign_in_lines(results),
        "",
        f"## Headline: GET {config['endpoints'][endpoint]} at {connections} connections, the rounds",
        "",
        "| contender | requests/s | p50 ms | p99 ms | CPU \u00b5s/request | baked vs it: rps | baked vs it: CPU "
        "| vs floor: rps | vs floor: CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in labels.items():
        s = cell(results, name, endpoint, connections)
        if s is None:
            continue
        out.append(
            f"| {label} | {fmt(s['rps'])} | {fmt(s['p50_ms'], 2)} | {fmt(s['p99_ms'], 2)} | "
            f"{fmt(s['cpu_us_per_request'])} | {ratio(baked, s, 'rps')} | {ratio(s, baked, 'cpu_us_per_request')} | "
            f"{ratio(s, floor, 'rps')} | {ratio(s, floor, 'cpu_us_per_request')} |"
        )
    out += [
        "",
        '"baked vs it" above 1 means the baked service is better (more requests per second, less CPU per '
        'request), as ratios of medians from different minutes. "vs floor" is the contender\'s figure over '
        f"{labels[floor_of(results)]}'s.",
        "",
        "## Every cell",
        "",
        "| endpoint | conns | contender | requests/s | p50 ms | p99 ms | CPU \u00b5s/request | errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in sorted(
        results["summary"],
        key=lambda s: (
            list(config["endpoints"]).index(s["endpoint"]),
            s["connections"],
            list(labels).index(s["contender"]),
        ),
    ):
        out.append(
            f"| {s['endpoint']} | {s['connections']} | {labels[s['contender']]} | {fmt(s['rps'])} | "
            f"{fmt(s['p50_ms'], 2)} | {fmt(s['p99_ms'], 2)} | {fmt(s['cpu_us_per_request'])} | "
            f"{s['errors']} |"
        )
    cold = results["cold_start_seconds"]
    out += [
        "",
        "## Cold start",
        "",
        f"Process start to the first 200 on `{cold['path']}` ({labels[cold['contender']]}, uvicorn, "
        f"{len(cold['each'])} starts): median {cold['median'] * 1000:.0f} ms "
        f"({cold['min'] * 1000:.0f}-{cold['max'] * 1000:.0f} ms).",
        "",
        "## Rows to Structs (bind), CPU only, median",
        "",
        micro_bind.table(results["micro_bind_ms"]),
        "",
        "## Versions",
        "",
        ", ".join(f"{name} {version}" for name, version in machine["packages"].items()) + ".",
        "",
    ]
    return "\n".join(out)


def paired_table(results: dict) -> list[str]:
    paired, labels = results["paired"], results["contenders"]
    seconds = results["config"]["seconds_per_run"]
    out = [
        f"## Paired: the baked service against each, GET {results['config']['endpoints'][paired['endpoint']]} at "
        f"{paired['connections']} connections",
        "",
        f"Every server up at once; {paired['rounds']} rounds each time every contender for {seconds:g} s, back to "
        "back, and the ratio taken within the round, so that the machine's drift over minutes cancels out. "
        "Median ratio, with min-max; above 1 the baked service does better.",
        "",
        "| against | requests/s ratio | CPU per request ratio | its requests/s | its CPU \u00b5s/request |",
        "|---|---:|---:|---:|---:|",
    ]
    own = {
        name: {
            metric: spread([r[metric] for r in paired["runs"] if r["contender"] == name])
            for metric in ("rps", "cpu_us_per_request")
        }
        for name in labels
        if any(r["contender"] == name for r in paired["runs"])
    }
    if "baked" in own:
        baked = own["baked"]
        out.append(f"| (the baked service) | | | {fmt(baked['rps'])} | {fmt(baked['cpu_us_per_request'])} |")
    for name, ratio_ in paired["ratios"].items():
        out.append(
            f"| {labels[name]} | {fmt(ratio_['rps'], 2)} | {fmt(ratio_['cpu'], 2)} | {fmt(own[name]['rps'])} | "
            f"{fmt(own[name]['cpu_us_per_request'])} |"
        )
    lowest = floor_of(results)
    if lowest in paired["ratios"]:
        ratio_ = paired["ratios"][lowest]
        out += [
            "",
            f"Against {labels[lowest]}, the least a service on this stack does: the baked service serves "
            f"**{ratio_['rps']['median']:.2f}x** its requests/s and spends **{1 / ratio_['cpu']['median']:.2f}x** "
            "its CPU per request (median of the rounds' ratios).",
        ]
    return out
