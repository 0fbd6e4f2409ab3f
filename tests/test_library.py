"""The library (heaven-plugins/) on its own: its suite passes where it is made, with no bake, against a real
Postgres, and it builds as a distribution whose wheel holds its package and nothing of its tests."""

import os
import re
import subprocess
import sys
import zipfile

from conftest import TEMPLATE

LIBRARY = TEMPLATE / "heaven-plugins"


def test_the_library_suite_passes_in_its_own_configuration(new_database, tmp_path, figures):
    # Its own pyproject.toml configures the run (cwd: rootdir and config are the library's, not this suite's), its
    # source here imported (ahead of any installed copy), on a database of this session's server.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "PYTHONPATH"}
    environ.update(
        PYTHONPATH=str(LIBRARY / "src"),
        TEST_DATABASE_URL=new_database(),
        # Its temporary folders inside this run's, as Baked.env() keeps a bake's, and for the same reason.
        PYTEST_DEBUG_TEMPROOT=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(LIBRARY)],
        cwd=LIBRARY,
        env=environ,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout[-20000:] + done.stderr[-5000:]
    assert done.returncode == 0, output
    summary = re.findall(r"^=+ (\d+ passed.*) in ([\d.]+)s", done.stdout, re.MULTILINE)
    assert summary, output
    assert not re.search(r"failed|skipped|error", summary[-1][0]), output
    figures(f"the library's suite: {summary[-1][0]} in {float(summary[-1][1]):.0f} s")


# Heaven as a release that renamed an internal the App overrides would be: loaded before the tests are.
RENAMED_IN_HEAVEN = """
import heaven.router

heaven.__version__ = "2.5.0"
heaven.router.Routes.miss = heaven.router.Routes.unmatched
del heaven.router.Routes.unmatched
"""


def test_a_heaven_that_changed_an_internal_fails_the_library_suite_naming_it(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(RENAMED_IN_HEAVEN)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    environ.update(
        PYTHONPATH=os.pathsep.join([str(LIBRARY / "src"), str(tmp_path)]), PYTEST_DEBUG_TEMPROOT=str(tmp_path)
    )
    # sitecustomize imports Heaven, and anyio with it, before pytest could rewrite anyio's plugin.
    quiet = ("-W", "ignore::pytest.PytestAssertRewriteWarning")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *quiet, "tests/test_heaven.py"],
        cwd=LIBRARY,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Heaven 2.5.0: Routes.unmatched is gone" in result.stdout
    assert "heaven>=2.4.3,<2.5 in pyproject.toml" in result.stdout


def test_the_library_builds_a_wheel_of_its_package(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(LIBRARY)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("heaven_plugins-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"heaven_plugins", wheel.name.rsplit("-", 3)[0] + ".dist-info"}
    assert "heaven_plugins/signin/migrations/0002_sign_in.sql" in names  # its migrations travel with it
    assert not [name for name in names if "__pycache__" in name or "/tests/" in name]
