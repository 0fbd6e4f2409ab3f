"""The app as uvicorn runs it: refuses to start without its database, and says why in one line."""

import os
import subprocess
import sys
import time
from pathlib import Path

import {{ cookiecutter.package_name }}

# Where the package is imported from, so the child finds it whether installed or not.
SOURCE = str(Path({{ cookiecutter.package_name }}.__file__).parents[1])


def test_uvicorn_exits_fast_when_postgres_is_unreachable(closed_port, tmp_path):
    environ = {
        **os.environ,
        "DATABASE_URL": f"postgresql://app:hunter2-secret@127.0.0.1:{closed_port}/appdb",
        "CONNECT_TIMEOUT": "3",
        "PYTHONPATH": SOURCE,
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "{{ cookiecutter.package_name }}.app:app", "--port", "0"],
        env=environ,
        cwd=tmp_path,  # no .env there
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert time.monotonic() - started < 3 + 5
    assert f"cannot connect to Postgres at 127.0.0.1:{closed_port}/appdb" in output
    assert "hunter2" not in output
