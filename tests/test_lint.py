"""Each bake passes ruff with the project's own configuration, as its CI would run it, and so do the library and the
template repository's own code."""

import subprocess
import sys

import pytest
from conftest import TEMPLATE
from test_bake import HOSTILE_NAMES

BAKES = [
    {},
    {"context_name": "database", "python_version": "3.13", "postgres_version": "15"},
    *({"project_name": name, "description": name, "author_name": name} for name in HOSTILE_NAMES),
]


@pytest.mark.parametrize("answers", BAKES, ids=lambda answers: answers.get("project_name", "defaults"))
def test_bake_passes_ruff_check_and_format(bake, answers):
    project = bake(**answers)
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=project.path, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_library_passes_ruff_check_and_format():
    # With its own configuration (heaven-plugins/pyproject.toml), as where it is made.
    library = TEMPLATE / "heaven-plugins"
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=library, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_template_repository_passes_ruff_at_its_root():
    # Its own tests, bench and hooks, with the root pyproject.toml: the template folder, whose pyproject.toml is
    # Jinja until baked, is left out there (and checked as bakes, above).
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=TEMPLATE, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
