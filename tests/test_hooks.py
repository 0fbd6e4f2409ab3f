"""Answers that would bake a broken project are refused in one clear line, leaving nothing behind."""

import subprocess
import sys
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        ("project_slug=Bad Slug", "project_slug"),
        ("project_slug=-dash-first", "project_slug"),
        ("package_name=class", "not a valid Python identifier"),
        ("package_name=9lives", "not a valid Python identifier"),
        ("package_name=my-app", "not a valid Python identifier"),
        ("package_name=json", "shadow"),
        ("package_name=heaven", "shadow"),
        ("package_name=asyncpg", "shadow"),
        ("package_name=test", "shadow"),
        ("package_name=heaven_plugins", "shadow"),
        ("project_slug=heaven-plugins", "library"),
        ("package_name=Upper", "lowercase"),
        ("context_name=app", "reserved"),
        ("context_name=not valid", "context_name"),
        ("context_name=user", "sign-in"),
        ("context_name=auth", "sign-in"),
    ],
)
def test_an_invalid_name_typed_by_hand_is_refused(tmp_path, answer, complaint):
    output, home = tmp_path / "out", tmp_path / "home"
    output.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(output), str(TEMPLATE), answer],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)},  # cookiecutter leaves hooks there
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and complaint in errors[0], result.stderr
    assert list(output.iterdir()) == []
