"""chart.png: the headline cell at a glance, from results.json (report.py writes it beside results.md)."""

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from report import cell, headline

matplotlib.use("Agg")  # no display on a server or in CI; before any figure exists

COLORS = {
    "baked": "#d62728",
    "baked_quiet": "#e377c2",
    "heaven_minimal": "#ff9896",
    "floor": "#444444",
    "raw": "#7f7f7f",
    "fastapi_asyncpg": "#1f77b4",
    "fastapi_sqlalchemy": "#aec7e8",
}


def chart(results: dict, path: Path) -> None:
    config, labels = results["config"], results["contenders"]
    endpoint, connections = headline(results)
    names = [name for name in labels if cell(results, name, endpoint, connections)]
    fig, axes = plt.subplots(1, 4, figsize=(21, 5.2), gridspec_kw={"width_ratios": [1, 1, 1, 1.4]})
    fig.suptitle(
        f"GET {config['endpoints'][endpoint]}, {connections} connections, one uvicorn worker on one core "
        f"(median of {config['rounds']} rounds; bars show min-max)",
        fontsize=12,
    )

    for ax, metric, title, better in (
        (axes[0], "rps", "requests per second", "higher is better"),
        (axes[1], "cpu_us_per_request", "server CPU \u00b5s per request", "lower is better"),
    ):
        cells = [cell(results, name, endpoint, connections)[metric] for name in names]
        medians = [c["median"] for c in cells]
        errors = [
            [m - c["min"] for m, c in zip(medians, cells, strict=True)],
            [c["max"] - m for m, c in zip(medians, cells, strict=True)],
        ]
        y = range(len(names))
        ax.barh(y, medians, xerr=errors, color=[COLORS.get(n, "#999") for n in names], capsize=3)
        ax.set_yticks(list(y), [labels[n] for n in names])
        ax.invert_yaxis()
        ax.set_title(f"{title} ({better})", fontsize=11)
        for i, (median, c) in enumerate(zip(medians, cells, strict=True)):
            ax.text(c["max"], i, f"  {median:,.0f}", va="center", fontsize=9)
        ax.set_xlim(0, max(c["max"] for c in cells) * 1.25)
        ax.spines[["top", "right"]].set_visible(False)
    axes[1].set_yticklabels([])

    # Third: instructions per request, counted in-process by callgrind; no bars of spread, it has none.
    ax = axes[2]
    counted = results["instructions"]["endpoints"][endpoint]["per_request"]
    # A contender not counted (the smoke run counts a few) gets no bar.
    values = [counted.get(name, 0) / 1000 for name in names]
    ax.barh(range(len(names)), values, color=[COLORS.get(n, "#999") for n in names])
    ax.set_yticks(list(range(len(names))), [])
    ax.invert_yaxis()
    ax.set_title("thousand instructions per request (lower is better)", fontsize=11)
    for i, value in enumerate(values):
        ax.text(value, i, f"  {value:,.0f}k", va="center", fontsize=9)
    ax.set_xlim(0, max(values) * 1.25)
    ax.spines[["top", "right"]].set_visible(False)

    # Right: requests per second on every endpoint at the headline's connection count.
    ax = axes[3]
    endpoints = [e for e in config["endpoints"] if cell(results, "baked", e, connections)]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [cell(results, name, e, connections)["rps"]["median"] for e in endpoints]
        ax.bar(
            [x + i * width for x in range(len(endpoints))],
            values,
            width,
            label=labels[name],
            color=COLORS.get(name, "#999"),
        )
    ax.set_xticks(
        [x + width * (len(names) - 1) / 2 for x in range(len(endpoints))],
        [config["endpoints"][e] for e in endpoints],
        fontsize=9,
    )
    ax.set_title(f"requests per second by endpoint, {connections} connections", fontsize=11)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
