"""Pulling in template changes with cruft works, for a project made by `cruft create` and by a plain `cookiecutter`
bake alike: the template as a git repository, a later commit that changes baked files, `cruft check` and
`cruft update` as the baked README says."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LOCKED_VENV, TEMPLATE
from test_baked_suite import PYTEST, passed
from test_readme import apply_guide, blocks

# What makes the template: the questions, the hooks, the project folder, and the library it carries (its vendor/
# links to heaven-plugins/; the rest of this repository is its tooling).
TEMPLATE_PARTS = ("cookiecutter.json", "hooks", "{{cookiecutter.project_slug}}", "heaven-plugins")
IDENTITY = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "T"}
IDENTITY["GIT_COMMITTER_EMAIL"] = "t@example.com"


class Shell:
    """Commands run as a person would, in a folder of this test's own, with no stray git or cookiecutter setup."""

    def __init__(self, home: Path) -> None:
        home.mkdir()
        (home / "config.yaml").write_text(f"cookiecutters_dir: {home / 'clones'}\nreplay_dir: {home / 'replay'}\n")
        self.environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "COOKIECUTTER"))},
            **IDENTITY,
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "COOKIECUTTER_CONFIG": str(home / "config.yaml"),
            "TMPDIR": str(home),  # cookiecutter leaves a copy of each hook there
        }

    def run(self, cwd: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        environ = {**self.environ, "PWD": str(cwd)}  # as a shell sets it
        done = subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=120)
        if check:
            assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    def git(self, cwd: Path, *args: str) -> str:
        return self.run(cwd, "git", *args).stdout.strip()

    def cruft(self, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(cwd, sys.executable, "-m", "cruft", *args, check=check)


@pytest.fixture
def shell(tmp_path) -> Shell:
    return Shell(tmp_path / "home")


@pytest.fixture
def template(tmp_path, shell) -> Path:
    """The template as it is in this working copy, committed to a git repository of its own."""
    repo = tmp_path / "heaven-pg"
    repo.mkdir()
    for part in TEMPLATE_PARTS:
        source = TEMPLATE / part
        if source.is_dir():
            # As git keeps them: vendor/'s links stay links, to the library beside them in this copy.
            ignored = (
                shutil.ignore_patterns("__pycache__", ".pytest_cache", "tests") if part == "heaven-plugins" else None
            )
            shutil.copytree(source, repo / part, symlinks=True, ignore=ignored or shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, repo / part)
    shell.git(repo, "init", "-q", "-b", "main")
    shell.git(repo, "add", "-A")
    shell.git(repo, "commit", "-q", "-m", "The template as baked")
    return repo


def bake(how: str, template: Path, out: Path, shell: Shell) -> Path:
    out.mkdir()
    if how == "cruft create":
        made = shell.cruft(out, "create", "--no-input", str(template))
    elif how == "cookiecutter, a local checkout":
        # Typed relative to where it runs, as people do: `cookiecutter ../heaven-pg`.
        made = shell.run(out, sys.executable, "-m", "cookiecutter", "--no-input", os.path.relpath(template, out))
    else:  # a URL: cookiecutter clones it, as it does gh:org/name (git+ says which VCS; the path holds no "git")
        made = shell.run(out, sys.executable, "-m", "cookiecutter", "--no-input", f"git+{template.as_uri()}")
    assert len(NEXT_STEPS.findall(made.stdout)) == 1, made.stdout  # the next steps, once
    (project,) = out.iterdir()
    # The README's first step: the project is a git repository with everything committed.
    shell.git(project, "init", "-q", "-b", "main")
    shell.git(project, "add", "-A")
    shell.git(project, "commit", "-q", "-m", "Baked")
    return project


def change_the_template(template: Path, shell: Shell) -> str:
    """A later template commit changing baked files, .env.example (each bake's .env is made from it) among them."""
    project = template / "{{cookiecutter.project_slug}}"
    makefile = project / "Makefile"
    makefile.write_text(makefile.read_text() + "\nversion:  ## the template's new target\n\t@echo 2\n")
    example = project / ".env.example"
    example.write_text(example.read_text() + "# A setting the template added later.\nNEW_SETTING=1\n")
    shell.git(template, "commit", "-q", "-am", "A later change")
    return shell.git(template, "rev-parse", "HEAD")


NEXT_STEPS = re.compile(r"^Baked [\w-]+\. Next", re.MULTILINE)  # what the post-gen hook prints after a bake
HOW = ["cruft create", "cookiecutter, a local checkout", "cookiecutter, a git URL"]


@pytest.mark.parametrize("how", HOW)
def test_a_later_template_commit_is_pulled_in_by_cruft_update(how, template, tmp_path, shell):
    baked_at = shell.git(template, "rev-parse", "HEAD")
    project = bake(how, template, tmp_path / "out", shell)
    state = json.loads((project / ".cruft.json").read_text())
    assert state["commit"] == baked_at
    env = (project / ".env").read_bytes()
    assert shell.cruft(project, "check").returncode == 0

    updated_to = change_the_template(template, shell)
    behind = shell.cruft(project, "check", check=False)
    assert behind.returncode == 1 and "out of date" in behind.stdout, behind.stdout

    update = shell.cruft(project, "update", "-y")
    assert "Good work" in update.stdout, update.stdout + update.stderr
    # cruft renders the template twice into folders of its own to make the patch: no next steps for those.
    assert not NEXT_STEPS.search(update.stdout + update.stderr), update.stdout
    assert "version:  ## the template's new target" in (project / "Makefile").read_text()
    assert "NEW_SETTING=1" in (project / ".env.example").read_text()
    assert (project / ".env").read_bytes() == env  # the project's own password, untouched
    assert not [path for path in project.rglob("*.rej")], update.stdout + update.stderr
    assert json.loads((project / ".cruft.json").read_text())["commit"] == updated_to
    assert shell.cruft(project, "check").returncode == 0
    # What changed is what the template changed, ready to review and commit.
    changed = shell.git(project, "diff", "HEAD", "--name-only").splitlines()
    assert changed == [".cruft.json", ".env.example", "Makefile"], changed
    assert not shell.git(project, "status", "--porcelain", "--untracked-files=all", "--ignored=no").count("??")


def test_a_bake_from_a_folder_that_is_not_a_git_checkout_says_how_to_set_the_commit(tmp_path, shell):
    # A template unpacked from an archive, say: no .git, no commit to name.
    plain = tmp_path / "plain"
    plain.mkdir()
    for part in TEMPLATE_PARTS:
        source = TEMPLATE / part
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, plain / part)
    out = tmp_path / "out"
    done = shell.run(tmp_path, sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(out), str(plain))
    assert "names no commit" in done.stdout
    (project,) = out.iterdir()
    assert json.loads((project / ".cruft.json").read_text())["commit"] is None


# An owner's own lines in the files a bake's owner edits (besides the README guide's resource, added as it says).
OWNED = {
    "src/{package}/users.py": "\n\n# Our own: who may see whom is ours to decide.\n",
    "src/{package}/settings.py": "\n\n# Our own: settings of our resources come here.\n",
    "README.md": "\n## Our notes\n\nOur service, in our words.\n",
}


def edit_as_an_owner(project: Path, package: str) -> dict[str, bytes]:
    """The README's guide to a resource (a migration, a module, its line in app.py, a test, and its job's line in
    worker.py), and lines of the owner's own in users.py, settings.py and the README: {path: content} of every
    file so edited."""
    before = {path: path.read_bytes() for path in project.rglob("*") if path.is_file() and ".git" not in path.parts}
    for block in blocks((project / "README.md").read_text(), "README.md"):
        if block.guide:
            apply_guide(block, project, [])
    for path, lines in OWNED.items():
        target = project / path.format(package=package)
        target.write_text(target.read_text() + lines)
    # A dependency of the owner's own, where they add it: the line after heaven-plugins'. One the locks
    # already hold, so that the suite below runs on them as they are.
    pyproject = project / "pyproject.toml"
    dependency = re.search(r'^    "heaven-plugins[^"]*",\n', pyproject.read_text(), re.M)
    assert dependency, "no heaven-plugins line in pyproject.toml's dependencies"
    at = dependency.end()
    pyproject.write_text(pyproject.read_text()[:at] + '    "msgspec>=0.19",  # ours\n' + pyproject.read_text()[at:])
    after = {path: path.read_bytes() for path in project.rglob("*") if path.is_file() and ".git" not in path.parts}
    edited = {
        path.relative_to(project).as_posix(): content for path, content in after.items() if before.get(path) != content
    }
    assert f"src/{package}/app.py" in edited and "pyproject.toml" in edited and len(edited) == 9, sorted(edited)
    return edited


def release_the_library(template: Path, shell: Shell) -> dict[str, bytes]:
    """A later template commit that releases the library: its code, its CHANGELOG and its version, and nothing
    else. {vendored path: content}."""
    library = template / "heaven-plugins"
    changed = {
        "src/heaven_plugins/__init__.py": "\n# Released later: a line of the library's code a bake has never seen.\n",
        "CHANGELOG.md": "\n- A later release, with a change a bake takes with `cruft update`.\n",
    }
    for path, line in changed.items():
        (library / path).write_text((library / path).read_text() + line)
    pyproject = library / "pyproject.toml"
    version = re.search(r'^version = "(\d+)\.(\d+)\.(\d+)"$', pyproject.read_text(), re.M)
    assert version, "no version in heaven-plugins/pyproject.toml"
    major, minor, patch = version.groups()
    pyproject.write_text(pyproject.read_text().replace(version[0], f'version = "{major}.{minor}.{int(patch) + 1}"'))
    shell.git(template, "commit", "-q", "-am", "heaven-plugins: a later release")
    return {path: (library / path).read_bytes() for path in [*changed, "pyproject.toml"]}


@LOCKED_VENV
def test_a_library_change_reaches_an_edited_bake_without_conflict(template, tmp_path, shell, locked_venv):
    """cruft update brings a new library into a project whose owner edited every file an owner edits: nothing
    to merge by hand, the owner's code as they left it, and the tests of what they made passing on the new library."""
    project = bake("cruft create", template, tmp_path / "out", shell)
    package = json.loads((project / ".cruft.json").read_text())["context"]["cookiecutter"]["package_name"]
    edited = edit_as_an_owner(project, package)
    shell.git(project, "add", "-A")
    shell.git(project, "commit", "-q", "-m", "Our resource, our settings, our README")

    released = release_the_library(template, shell)
    update = shell.cruft(project, "update", "-y")
    output = update.stdout + update.stderr
    assert "Good work" in output, output
    assert not [path for path in project.rglob("*.rej")], output
    changed = shell.git(project, "diff", "HEAD", "--name-only").splitlines()
    vendored = [f"vendor/heaven-plugins/{path}" for path in released]
    assert sorted(changed) == sorted([".cruft.json", *vendored]), changed
    for path in changed:
        assert not re.search(r"^(<<<<<<<|>>>>>>>|=======$)", (project / path).read_text(), re.M), path
    # The library's change, byte for byte, where the bake carries it; the owner's files as the owner left them.
    for path, content in released.items():
        assert (project / "vendor" / "heaven-plugins" / path).read_bytes() == content, path
    for path, content in edited.items():
        assert (project / path).read_bytes() == content, path

    # As the README says after an update: `make install test`, in a venv holding the locked versions. The new release
    # is what it installs, and the tests of what the owner made pass on it: the guide's resource, and the app they
    # composed (a bake's whole suite runs in test_readme.py).
    venv, _ = locked_venv
    venv.run("make install", project)
    release = re.search(r'^version = "([^"]+)"$', released["pyproject.toml"].decode(), re.M)
    installed = subprocess.run(
        [venv.python, "-c", "from importlib.metadata import version; print(version('heaven-plugins'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert release and installed.stdout.strip() == release[1], installed.stdout
    result = subprocess.run(
        [venv.python, *PYTEST, "tests/test_projects.py", "tests/test_app.py"],
        cwd=project,
        env=venv.environ,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert passed(result) > 0
