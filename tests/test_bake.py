"""Baking: every answer lands where it belongs, every file parses, nothing of the template is left over."""

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import TEMPLATE

HOSTILE_NAMES = [
    'He said "hi" \\ and left',
    "Ünïcødé Café — naïve façade",
    "O'Brien's \"Quoted\" \\\\Service\\",
    '"""; import os; os.system("touch pwned") #',
    "!!!",
    "123 Go",
]


def baked_files(project):
    return [p for p in project.path.rglob("*") if p.is_file() and ".git" not in p.parts]


def check_parses(project):
    for path in baked_files(project):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            tomllib.loads(text)
        elif path.suffix in {".yml", ".yaml"}:
            yaml.safe_load(text)
        elif path.suffix == ".json":
            json.loads(text)
        elif path.suffix == ".py":
            compile(text, str(path), "exec")
        if path.name == ".cruft.json":
            continue  # cruft's answers file: its format names the tool ("context": {"cookiecutter": ...})
        # Jinja that was not rendered, or a mention of how the project was made, is a leftover; but the mail's
        # templates are Jinja the worker renders, copied as they are (_copy_without_render).
        if path.parent.name == "mail" and path.parent.parent.parent.name == "src":
            assert "cookiecutter" not in text and "{%" not in text, f"leftover in {path}"
            continue
        assert not re.search(r"\{\{|\{%|cookiecutter", text), f"leftover in {path}"


def test_default_bake_has_the_promised_layout(default_project):
    package = default_project.path / "src" / default_project.package
    # What its owner edits; the machinery is the library's (vendor/heaven-plugins).
    for name in ["app.py", "settings.py", "resources.py", "users.py", "admin.py", "migrate.py", "dev.py", "worker.py"]:
        assert (package / name).is_file(), name
    assert sorted(path.name for path in (package / "migrations").iterdir()) == ["0001_users.sql"]
    # Sign-in brings its own migrations, applied with the project's in name order.
    signin = default_project.path / "vendor" / "heaven-plugins" / "src" / "heaven_plugins" / "signin" / "migrations"
    assert sorted(path.name for path in signin.iterdir()) == [
        "0002_sign_in.sql",
        "0003_sign_in_counts.sql",
        "0005_accounts.sql",
        "0005_accounts_email_change.sql",
    ]
    assert [path.name for path in (signin.parents[1] / "jobs" / "migrations").iterdir()] == ["0004_jobs.sql"]
    # The mail's templates, rendered by the worker, not by the bake.
    assert "{{ link }}" in (package / "mail" / "verify.txt").read_text()
    for name in ["pyproject.toml", "README.md", "docker-compose.yml", "Dockerfile", ".env.example", ".gitignore"]:
        assert (default_project.path / name).is_file(), name
    check_parses(default_project)


# What a bake carries of the library: what installs it, and nothing of its tests (they run where it is made).
VENDORED = ["CHANGELOG.md", "README.md", "pyproject.toml", "src"]


def files_under(folder: Path) -> dict[str, bytes]:
    """{relative path: content} of every file under `folder`, bytecode caches left out."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_bake_carries_the_library_as_it_is_in_the_template(default_project):
    vendored = default_project.path / "vendor" / "heaven-plugins"
    assert sorted(path.name for path in vendored.iterdir()) == VENDORED
    assert not [path for path in vendored.rglob("*") if path.is_symlink() or path.name == "__pycache__"]
    carried = files_under(vendored)
    library = TEMPLATE / "heaven-plugins"
    made = {name: content for name, content in files_under(library).items() if name.split("/")[0] in VENDORED}
    assert carried.keys() == made.keys()
    assert [name for name in carried if carried[name] != made[name]] == []


def test_every_answer_is_used(bake):
    project = bake(
        project_name="Ledger of Things",
        description="Keeps a ledger.",
        author_name="Ada Lovelace",
        author_email="ada@example.org",
        python_version="3.12",
        postgres_version="16",
        context_name="database",
    )
    assert project.path.name == "ledger-of-things"
    assert project.package == "ledger_of_things"
    pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "ledger-of-things"
    assert pyproject["project"]["description"] == "Keeps a ledger."
    assert pyproject["project"]["authors"] == [{"name": "Ada Lovelace", "email": "ada@example.org"}]
    assert pyproject["project"]["requires-python"] == ">=3.12"
    assert pyproject["tool"]["ruff"]["target-version"] == "py312"
    compose = yaml.safe_load((project.path / "docker-compose.yml").read_text())
    assert compose["services"]["db"]["image"] == "postgres:16"
    assert "Ledger of Things" in (project.path / "README.md").read_text()
    resources = (project.path / "src" / "ledger_of_things" / "resources.py").read_text()
    assert 'Key("database")' in resources
    check_parses(project)


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_each_python_version_bakes(bake, version):
    project = bake(python_version=version)
    assert tomllib.loads((project.path / "pyproject.toml").read_text())["project"]["requires-python"] == f">={version}"
    assert f"FROM python:{version}-slim" in (project.path / "Dockerfile").read_text()
    check_parses(project)


@pytest.mark.parametrize("version", ["15", "16", "17"])
def test_each_postgres_version_bakes(bake, version):
    project = bake(postgres_version=version)
    compose = yaml.safe_load((project.path / "docker-compose.yml").read_text())
    assert compose["services"]["db"]["image"] == f"postgres:{version}"
    check_parses(project)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_project_name_bakes_with_sanitized_names(bake, name):
    project = bake(project_name=name, description=name, author_name=name)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", project.path.name)
    assert project.package.isidentifier() and project.package.isascii()
    pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
    assert pyproject["project"]["description"] == name
    assert pyproject["project"]["authors"][0]["name"] == name
    assert not (project.path / "pwned").exists() and not (project.path.parent / "pwned").exists()
    check_parses(project)


def test_the_password_and_the_token_secret_are_fresh_per_bake_and_never_in_the_replay_file(bake):
    first, second = bake(), bake()
    secrets = []
    for project in (first, second):
        env = dict(line.split("=", 1) for line in (project.path / ".env").read_text().splitlines() if "=" in line)
        password, token_secret = env["POSTGRES_PASSWORD"], env["TOKEN_SECRET"]
        assert len(password) >= 24 and password != "change-me"
        assert len(token_secret) >= 32 and token_secret != password
        assert f":{password}@" in env["DATABASE_URL"]
        for secret in (password, token_secret):
            assert secret not in project.replay.read_text()
            assert secret not in (project.path / ".env.example").read_text()
        assert (project.path / ".env").stat().st_mode & 0o077 == 0
        secrets.append((password, token_secret))
    assert secrets[0][0] != secrets[1][0] and secrets[0][1] != secrets[1][1]
    example = dict(line.split("=", 1) for line in (first.path / ".env.example").read_text().splitlines() if "=" in line)
    assert example["TOKEN_SECRET"] == ""  # copied as is, the app refuses to start rather than sign with a known secret


def test_env_is_git_ignored(default_project, tmp_path):
    repo = default_project.path
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", ".env"], capture_output=True, text=True)
    assert ignored.returncode == 0 and ignored.stdout.strip() == ".env"
    tracked = subprocess.run(["git", "-C", str(repo), "check-ignore", ".env.example"], capture_output=True)
    assert tracked.returncode == 1
