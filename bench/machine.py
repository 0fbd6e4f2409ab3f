"""What a run was measured on (results.json's "machine")."""

import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path


def describe(wrk_path: str) -> dict:
    """The CPU, kernel, Python, wrk and package versions a run was measured with, and when."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    wrk_version = subprocess.run([wrk_path, "-v"], capture_output=True, text=True, timeout=10).stdout.split("\n")[0]
    packages = (
        "heaven",
        "asyncpg",
        "msgspec",
        "uvicorn",
        "uvloop",
        "httptools",
        "fastapi",
        "starlette",
        "pydantic",
        "pydantic-core",
        "sqlalchemy",
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": " ".join(wrk_version.split()[:2]),
        "packages": {name: metadata.version(name) for name in packages},
        "postgres": "pgserver " + metadata.version("pgserver"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
