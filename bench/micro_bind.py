"""Rows to Structs: the plugin's bind (heaven_plugins.postgres.bind_rows) against msgspec.convert.

    python bench/micro_bind.py     # after bench/run.py has made bench/.venv and baked the template

CPU only: the rows are fetched once, then each path converts the same asyncpg Records. Prints
the median milliseconds of many repeats at 100, 1,000 and 10,000 rows.
"""

import asyncio
import importlib
import statistics
import sys
import time
from pathlib import Path

import prepare

SIZES = (100, 1_000, 10_000)


def paths(bind_rows, user: type) -> dict:
    import msgspec

    return {
        "bind_rows (the plugin)": lambda rows: bind_rows(rows, user),
        "msgspec.convert(records)": lambda rows: msgspec.convert(rows, list[user]),
        "msgspec.convert(dicts)": lambda rows: msgspec.convert([dict(row) for row in rows], list[user]),
    }


async def measure(dsn: str, sizes=SIZES, repeat: int = 25) -> dict:
    """{path: {rows: median ms}} for each conversion of `rows` Records into the baked User Struct."""
    import asyncpg
    from heaven_plugins.postgres import bind_rows

    users = importlib.import_module(f"{prepare.PACKAGE}.users")
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        records = await conn.fetch(users.SELECT_USERS, 0, max(sizes))
    finally:
        await conn.close()
    results: dict[str, dict[str, float]] = {}
    for name, convert in paths(bind_rows, users.User).items():
        for size in sizes:
            rows = records[:size]
            expected = [users.User(*row) for row in rows]
            if convert(rows) != expected:
                raise AssertionError(f"{name} does not give the same Structs as User(*row)")
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                convert(rows)
                times.append(time.perf_counter() - start)
            results.setdefault(name, {})[str(size)] = round(statistics.median(times) * 1000, 3)
    return results


def table(results: dict) -> str:
    sizes = list(next(iter(results.values())))
    lines = ["| path | " + " | ".join(f"{int(size):,} rows" for size in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for name, by_size in results.items():
        lines.append(f"| `{name}` | " + " | ".join(f"{by_size[size]:.3f} ms" for size in sizes) + " |")
    return "\n".join(lines)


def main() -> None:
    if not prepare.in_venv():
        raise SystemExit(f"run it with {prepare.venv_python()} (made by bench/run.py)")
    import database

    migrations = importlib.import_module(f"{prepare.PACKAGE}.migrate").MIGRATIONS
    dsn = database.prepare(prepare.WORK / "pgdata", 0, migrations)
    print(table(asyncio.run(measure(dsn))))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
