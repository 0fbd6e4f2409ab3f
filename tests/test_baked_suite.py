"""The baked project's own tests pass: against the suite's Postgres, and the README's way on a fresh venv.

The default bake's suite against a given database (TEST_DATABASE_URL) runs in test_guide.py, with the README's
example resource added: every test of the bake, and the guide's.
"""

import os
import re
import subprocess
import sys
import venv

PYTEST = ("-m", "pytest", "-q", "-p", "no:cacheprovider")


def passed(result: subprocess.CompletedProcess) -> int:
    """How many tests passed, after checking the run ended green with none failed or skipped."""
    output = result.stdout[-5000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    assert " failed" not in result.stdout and " skipped" not in result.stdout, output
    match = re.search(r"(\d+) passed", result.stdout)
    return int(match.group(1)) if match else 0


def test_baked_tests_pass_with_another_context_name(bake, new_database):
    project = bake(project_name="Other Context", context_name="database")
    result = project.run(sys.executable, *PYTEST, TEST_DATABASE_URL=new_database(), timeout=300)
    assert passed(result) >= 50


def test_the_readme_commands_work_in_a_fresh_virtualenv(default_project, tmp_path):
    """`pip install -e '.[dev]'` then `pytest`, with no TEST_DATABASE_URL: the tests start their own Postgres."""
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    environ = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "DATABASE_URL", "PYTHONPATH"}}
    environ["PYTEST_DEBUG_TEMPROOT"] = str(tmp_path)  # as Baked.env() does, and why

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [python, *args], cwd=default_project.path, env=environ, capture_output=True, text=True, timeout=600
        )

    install = run("-m", "pip", "install", "-q", "-e", ".[dev]")
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert passed(run(*PYTEST)) >= 50
