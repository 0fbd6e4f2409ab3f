"""The timed runs summarized: per contender and cell, the median of the rounds with min and max, and the baked
service's ratio to each other contender in every cell."""

from load import spread


def summarize(runs: list[dict]) -> list[dict]:
    """Per contender, endpoint and connection count: the median of the rounds, with min and max."""
    cells: dict[tuple, list[dict]] = {}
    for run in runs:
        cells.setdefault((run["contender"], run["endpoint"], run["connections"]), []).append(run)
    return [
        {
            "contender": contender,
            "endpoint": endpoint,
            "connections": connections,
            "rounds": len(group),
            "errors": sum(r["errors"] for r in group),
            **{
                metric: spread([r[metric] for r in group])
                for metric in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")
            },
        }
        for (contender, endpoint, connections), group in cells.items()
    ]


def ratios(summary: list[dict], contenders) -> dict:
    """The baked service against each other contender in every cell: >1 means the baked service is better.

    rps: baked / other. cpu: other / baked (less CPU per request is better).
    """
    by = {(s["contender"], s["endpoint"], s["connections"]): s for s in summary}
    table = {}
    for (name, endpoint, connections), cell in by.items():
        baked = by.get((contenders.BAKED.name, endpoint, connections))
        if baked is None or name == contenders.BAKED.name:
            continue
        table.setdefault(f"{endpoint} @ {connections}", {})[name] = {
            "rps": round(baked["rps"]["median"] / cell["rps"]["median"], 3),
            "cpu": round(cell["cpu_us_per_request"]["median"] / baked["cpu_us_per_request"]["median"], 3),
        }
    return table
