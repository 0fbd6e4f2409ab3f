"""The baked project's own tests pass: against the suite's Postgres, and the README's way on a fresh venv."""

import os
import re
import subprocess
import sys
import venv


def passed(output: str) -> int:
    match = re.search(r"(\d+) passed", output)
    return int(match.group(1)) if match else 0


def test_baked_tests_pass_against_a_given_database(default_project, new_database):
    result = default_project.run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST_DATABASE_URL=new_database(), timeout=300
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert passed(result.stdout) >= 50, result.stdout[-2000:]
    assert " failed" not in result.stdout and " skipped" not in result.stdout


def test_baked_tests_pass_with_another_context_name(bake, new_database):
    project = bake(project_name="Other Context", context_name="database")
    result = project.run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST_DATABASE_URL=new_database(), timeout=300
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_the_readme_commands_work_in_a_fresh_virtualenv(default_project, tmp_path):
    """`pip install -e '.[dev]'` then `pytest`, with no TEST_DATABASE_URL: the tests start their own Postgres."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    environ = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "DATABASE_URL", "PYTHONPATH"}}
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "-e", ".[dev]"],
        cwd=default_project.path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    tests = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=default_project.path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-2000:]
    assert passed(tests.stdout) >= 50
