"""The baked project's own tests pass on its locked versions in a fresh venv.

The default bake's whole suite runs in test_readme.py, as its README says (a fresh venv, `make install`, `pytest`),
with the README's example resource added, and after an update in test_update.py. The fresh venv here (conftest's
locked_venv) installs the image's lock as the Dockerfile does, then the dev lock, in a bake with another context
name, and runs the tests that name reaches. The machinery's own tests are the library's (test_library.py).
"""

import re
import subprocess
from pathlib import Path

from conftest import LOCKED_VENV
from packaging.markers import Marker
from packaging.utils import canonicalize_name

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


@LOCKED_VENV
def test_the_locks_install_in_a_fresh_virtualenv_and_the_tests_pass_on_them(locked_venv, tmp_path, figures):
    """Each of the Dockerfile's lines and `make install` installs exactly its lock's versions, the service
    imports with the first alone, and `pytest`, with no TEST_DATABASE_URL (the tests start their own Postgres),
    passes on the second, in a bake with another context name."""
    venv, baked = locked_venv
    assert venv.installed["image"] == locked(baked.path / "requirements.txt")
    assert venv.installed["make install"] == locked(baked.path / "requirements-dev.txt")
    venv.run(f"{venv.python} -c 'import {baked.package}.app'", cwd=tmp_path)  # no .env there: the defaults
    image, install = venv.seconds["image"], venv.seconds["make install"]
    figures(f"runtime lock into a fresh venv (the Dockerfile's lines) {image:.1f} s; then make install {install:.1f} s")

    # The modules that reach the database through the context's name (the whole suite runs in test_readme.py).
    reached = ["tests/test_app.py", "tests/test_users.py", "tests/test_resources.py"]
    reached = [name for name in reached if (baked.path / name).is_file()]
    result = subprocess.run(
        [venv.python, *PYTEST, *reached], cwd=baked.path, env=venv.environ, capture_output=True, text=True, timeout=600
    )
    assert passed(result) >= 30


def locked(lock: Path) -> dict[str, str]:
    """{name: version} of what `lock` pins for this Python and platform."""
    pins = re.findall(r"^([\w.-]+)==([^ \\\n]+)(?: ; ([^\\\n]+))?", lock.read_text(), re.M)
    return {canonicalize_name(n): v for n, v, marker in pins if not marker or Marker(marker).evaluate()}
