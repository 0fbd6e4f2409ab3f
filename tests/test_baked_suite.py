"""The baked project's own tests pass: against the suite's Postgres, and on its locked versions in a fresh venv.

The default bake's whole suite runs in test_readme.py, as its README says (a fresh venv, `make install`, `pytest`),
with the README's example resource added. The fresh venv here installs the image's lock as the Dockerfile does,
then the dev lock, in a bake with another context name, and runs the tests that name reaches.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name
from test_container import instructions

PYTEST = ("-m", "pytest", "-q", "-p", "no:cacheprovider")


def passed(result: subprocess.CompletedProcess) -> int:
    """How many tests passed, after checking the run ended green with none failed or skipped."""
    output = result.stdout[-5000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    # The summary line alone: the service's log lines, in the output too, may say "failed" about a connection.
    summaries = re.findall(r"^=* ?(\d+ passed.*) in [\d.]+s", result.stdout, re.MULTILINE)
    assert summaries, output
    assert not re.search(r"failed|skipped|error", summaries[-1]), output
    return int(summaries[-1].split()[0])


# Heaven as a release that renamed an internal the App overrides would be: loaded before the tests are.
RENAMED_IN_HEAVEN = """
import heaven.router

heaven.__version__ = "2.5.0"
heaven.router.Routes.miss = heaven.router.Routes.unmatched
del heaven.router.Routes.unmatched
"""


def test_a_heaven_that_changed_an_internal_fails_the_bake_naming_it(default_project, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(RENAMED_IN_HEAVEN)
    result = default_project.run(
        sys.executable,
        *PYTEST,
        # sitecustomize imports Heaven, and anyio with it, before pytest could rewrite anyio's plugin.
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
        "tests/test_heaven.py",
        PYTHONPATH=os.pathsep.join(map(str, [*default_project.sources, tmp_path])),
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Heaven 2.5.0: Routes.unmatched is gone" in result.stdout
    assert "heaven>=2.4.3,<2.5 in pyproject.toml" in result.stdout


def test_the_locks_install_in_a_fresh_virtualenv_and_the_tests_pass_on_them(bake, tmp_path, figures):
    """The Dockerfile's install lines, then `make install` as the README says, in one fresh venv: each installs
    exactly its lock's versions, the service imports with the first alone, and `pytest`, with no
    TEST_DATABASE_URL (the tests start their own Postgres), passes on the second, in a bake whose requests carry
    the database as `ctx.database`, not the default `ctx.db`."""
    baked = bake(project_name="Other Context", context_name="database")
    project = baked.path
    venv_dir = tmp_path / "venv"
    python = str(venv_dir / "bin" / "python")
    environ = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "DATABASE_URL", "PYTHONPATH"}}
    # The venv's commands first, once it exists; this Python's until then (for `python -m venv`).
    environ["PATH"] = os.pathsep.join([str(venv_dir / "bin"), str(Path(sys.executable).parent), environ["PATH"]])
    environ["PYTEST_DEBUG_TEMPROOT"] = str(tmp_path)  # as Baked.env() does, and why

    def run(command: str, cwd: Path = project) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=environ, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done

    def timed(commands: list[str]) -> float:
        started = time.perf_counter()
        for command in commands:
            run(command)
        return time.perf_counter() - started

    # The image's build stage, its /venv here instead.
    steps = instructions((project / "Dockerfile").read_text())
    build_stage = steps[: [op for op, _ in steps].index("FROM", 1)]
    image = timed([args.replace("/venv", str(venv_dir)) for op, args in build_stage if op == "RUN"])
    assert installed(python, run, project.name) == locked(project / "requirements.txt")
    run(f"{python} -c 'import {baked.package}.app'", cwd=tmp_path)  # no .env there: the defaults

    makefile = (project / "Makefile").read_text()
    install = timed([re.search(r"^install:.*\n\t(.+)$", makefile, re.M).group(1)])
    assert installed(python, run, project.name) == locked(project / "requirements-dev.txt")
    figures(f"runtime lock into a fresh venv (the Dockerfile's lines) {image:.1f} s; then make install {install:.1f} s")

    # The modules that reach the database through the context's name (the whole suite runs in test_readme.py).
    reached = ["tests/test_app.py", "tests/test_postgres.py", "tests/test_users.py"]
    result = subprocess.run(
        [python, *PYTEST, *reached], cwd=project, env=environ, capture_output=True, text=True, timeout=600, check=False
    )
    assert passed(result) >= 50


def locked(lock: Path) -> dict[str, str]:
    """{name: version} of what `lock` pins for this Python and platform."""
    pins = re.findall(r"^([\w.-]+)==([^ \\\n]+)(?: ; ([^\\\n]+))?", lock.read_text(), re.M)
    return {canonicalize_name(n): v for n, v, marker in pins if not marker or Marker(marker).evaluate()}


def installed(python: str, run, project: str) -> dict[str, str]:
    """{name: version} of what the venv holds, but for the project itself and what `python -m venv` put there."""
    listed = json.loads(run(f"{python} -m pip list --format=json").stdout)
    ignored = {canonicalize_name(project), "pip", "setuptools", "wheel"}
    return {canonicalize_name(p["name"]): p["version"] for p in listed if canonicalize_name(p["name"]) not in ignored}
