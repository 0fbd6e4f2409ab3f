"""Give the baked project its own secrets, record the template commit it came from, and say what to do next."""

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

ANSWERS = json.loads(
    r"""
{{ {
    "project_slug": cookiecutter.project_slug,
    "package_name": cookiecutter.package_name,
} | tojson }}
""".strip()
)
# Where the template was read from. cookiecutter 2.7 names its folder (`_repo_dir`); cruft, which
# writes .cruft.json itself, does not, and names the commit it renders (`_commit`) instead.
SOURCE = json.loads(
    r"""
{{ {
    "template": cookiecutter.get("_template"),
    "repo_dir": cookiecutter.get("_repo_dir"),
    "commit": cookiecutter.get("_commit"),
} | tojson }}
""".strip()
)


def write_env(project: Path) -> None:
    """Fill .env from .env.example with a database password and a token secret made for this bake alone.

    Neither passes through cookiecutter's answers, so neither reaches the replay file; .env
    itself is git-ignored.
    """
    password = secrets.token_urlsafe(24)
    lines = (project / ".env.example").read_text(encoding="utf-8").replace("change-me", password).splitlines()
    lines = [f"TOKEN_SECRET={secrets.token_urlsafe(32)}" if line == "TOKEN_SECRET=" else line for line in lines]
    env = project / ".env"
    env.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env.chmod(0o600)


def record_template(project: Path, template: str | None, repo_dir: str | None) -> str:
    """Write the template's commit, and a place git can clone it from, into .cruft.json when the
    template was a git checkout (cookiecutter clones gh: and URL templates into one), so that
    `cruft check` and `cruft update` work on a plain cookiecutter bake. Returns what to tell the user."""
    if not repo_dir or not template:
        return ""  # baked by cruft, which records the commit itself
    # A local template's path comes as it was typed, relative to where cookiecutter was run (not here).
    typed_in = Path(os.environ.get("PWD") or os.getcwd())
    folder = typed_in / repo_dir  # an absolute repo_dir stays itself

    def git(*args: str) -> str | None:
        # Local commands only: the template's own checkout, no network.
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != folder.resolve():
        return (
            "The template was not a git checkout, so .cruft.json names no commit: set `commit` and `template`\n"
            "there by hand before `cruft update` (see the README, Pulling in template changes).\n"
        )
    # A template named by URL or abbreviation (gh:) was cloned by cookiecutter: its origin is what git clones again.
    local = (typed_in / os.path.expanduser(template)).is_dir()
    source = str(folder.resolve()) if local else git("remote", "get-url", "origin")
    state_file = project / ".cruft.json"
    state = json.loads(state_file.read_text(encoding="utf-8"))
    state.update(template=source or str(folder.resolve()), commit=git("rev-parse", "HEAD"))
    state_file.write_text(json.dumps(state, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if git("status", "--porcelain", "--untracked-files=no"):
        return f"The template has uncommitted changes: .cruft.json names its last commit, {state['commit'][:12]}.\n"
    return ""


def rendered_for_a_patch(project: Path) -> bool:
    """Whether cruft renders the template to compute a patch (`cruft update`, `cruft diff`) rather than to
    make a project: it renders into a temporary folder of its own (tempfile's), where nobody reads next steps.
    `cruft create` renders where it is asked, and names the commit as the others do."""
    if SOURCE["commit"] is None:
        return False  # cookiecutter itself
    made_in = project.resolve().parent
    return made_in.parent == Path(tempfile.gettempdir()).resolve() and made_in.name.startswith("tmp")


def drop_caches(project: Path) -> None:
    """vendor/ is copied from the template's library as it lies: a checkout where its tests ran has
    bytecode caches there, which belong to no bake."""
    for cache in sorted((project / "vendor").rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    drop_caches(Path.cwd())
    write_env(Path.cwd())
    note = record_template(Path.cwd(), SOURCE["template"], SOURCE["repo_dir"])
    if not rendered_for_a_patch(Path.cwd()):
        # The baked README's first steps, word for word (the template's tests check it).
        print(
            f"\nBaked {ANSWERS['project_slug']}. Next, as its README.md says (no Docker needed):\n"
            f"  cd {ANSWERS['project_slug']}\n"
            "  python -m venv .venv && . .venv/bin/activate\n"
            "  make install\n"
            f"  python -m {ANSWERS['package_name']}.dev\n"
            f"{note}"
        )
