"""The lock files every bake ships: they match its pyproject.toml whatever the answers, and hold the wheels of
every Python the template offers. (That a fresh venv installs exactly them is in test_baked_suite.py.)"""

import difflib
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import TEMPLATE, needs

LOCKS = ("requirements.txt", "requirements-dev.txt")
PYTHONS = json.loads((TEMPLATE / "cookiecutter.json").read_text())["python_version"]
# What pip would pick, every file's hash required and no source build allowed, without installing it.
PICK_WHEELS = [sys.executable, "-m", "uv", "pip", "install", "--dry-run", "--require-hashes", "--only-binary", ":all:"]
# Where each lock must install from wheels alone: the image (python:X-slim has no compiler) on both
# architectures; CI, and developers' usual machines. Elsewhere (pgserver has no aarch64 Linux wheel, and
# some packages no Intel macOS wheel) pip builds from the source archives, whose hashes the locks hold.
LINUX = ["x86_64-manylinux_2_28", "aarch64-manylinux_2_28"]
PLATFORMS = {
    "requirements.txt": LINUX,
    "requirements-dev.txt": [LINUX[0], "aarch64-apple-darwin", "x86_64-pc-windows-msvc"],
}


@needs(shutil.which("make"), "make")
@pytest.mark.parametrize(
    "answers",
    [{}, {"project_name": "O'Brien's \"Quoted\" Ledger", "python_version": "3.13", "context_name": "database"}],
    ids=["defaults", "other-answers"],
)
def test_make_lock_in_a_fresh_bake_changes_nothing(bake, answers):
    """uv resolves pyproject.toml again starting from the shipped locks, and writes them back: not a byte moves."""
    project = bake(**answers)
    shipped = {name: (project.path / name).read_text() for name in LOCKS}
    # uv is a dev dependency: this Python's venv has it.
    path = os.pathsep.join([str(os.path.dirname(sys.executable)), os.environ["PATH"]])
    result = project.run("make", "--no-print-directory", "lock", timeout=300, PATH=path)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in LOCKS:
        relocked = (project.path / name).read_text()
        diff = "".join(difflib.unified_diff(shipped[name].splitlines(True), relocked.splitlines(True), name, name))
        assert not diff, f"{name} does not match pyproject.toml; `python scripts/lock.py` refreshes it:\n{diff[:3000]}"
    # uv names the project in its comments, where the dev tools come from it: this one, not the template's.
    assert project.path.name in shipped["requirements-dev.txt"]
    # heaven-plugins comes from vendor/, not from the locks: uv says it left it out.
    assert "# The following packages were excluded from the output:\n# heaven-plugins\n" in shipped["requirements.txt"]


@pytest.mark.parametrize("python", PYTHONS)
def test_the_locks_hold_wheels_for_every_offered_python(default_project, python, tmp_path):
    for name, platforms in PLATFORMS.items():
        for platform in platforms:
            target = ["--python-version", python, "--python-platform", platform, "--target", str(tmp_path)]
            result = subprocess.run(
                [*PICK_WHEELS, *target, "-r", name],
                cwd=default_project.path,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, f"{name} on Python {python}, {platform}:\n{result.stderr[-2000:]}"
            assert "Would install" in result.stderr, result.stderr
