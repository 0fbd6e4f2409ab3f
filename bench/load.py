"""One timed run: wrk against one URL, and the server's CPU time read from /proc around it."""

import json
import os
import statistics
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

# wrk's own summary is for people; this prints one JSON line for us. Latencies are in uss.
# wrk counts a response with status > 399 as a "status" error, next to socket errors.
REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    errors: int
    error_kinds: dict

    def to_json(self) -> dict:
        return asdict(self)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of proc(5)


def wrk(wrk_path: str, url: str, connections: int, seconds: int, core: int, script: Path) -> dict:
    command = [
        "taskset",
        "-c",
        str(core),
        wrk_path,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(wrk_path: str, url: str, connections: int, seconds: int, core: int, script: Path, pid: int) -> Run:
    before = cpu_seconds(pid)
    result = wrk(wrk_path, url, connections, seconds, core, script)
    cpu = cpu_seconds(pid) - before
    kinds = {kind: result[kind] for kind in ("connect", "read", "write", "status", "timeout") if result[kind]}
    requests, elapsed = result["requests"], result["duration_us"] / 1e6
    return Run(
        requests=requests,
        seconds=round(elapsed, 3),
        rps=round(requests / elapsed, 1),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        cpu_us_per_request=round(cpu / requests * 1e6, 1) if requests else float("nan"),
        errors=sum(kinds.values()),
        error_kinds=kinds,
    )


def write_script(directory: Path, authorization: str | None = None) -> Path:
    """wrk's Lua script: the report above, and the `Authorization` header on every request if given."""
    path = directory / "report.lua"
    header = f'wrk.headers["Authorization"] = "{authorization}"\n' if authorization else ""
    path.write_text(header + REPORT_LUA)
    return path


def spread(values: list[float]) -> dict:
    """Median, min and max, to 3 decimals."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}
