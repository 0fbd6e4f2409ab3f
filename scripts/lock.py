"""Refresh the lock files the template ships: bake the project, run its `make lock`, and copy the locks back.

    python scripts/lock.py              # after editing the baked pyproject.toml: pin what changed, keep every other pin
    python scripts/lock.py --upgrade    # the newest versions the baked pyproject.toml allows (`make upgrade`)

The locks come from the baked pyproject.toml alone, through the project's own Makefile, so they are
exactly what `make lock` in any baked project would write. Only the project's own name, which uv
writes into its `# via` comments, goes back into the template as the answer it came from.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
PROJECT = TEMPLATE / "{{cookiecutter.project_slug}}"
LOCKS = ("requirements.txt", "requirements-dev.txt")
# A name no dependency has, so that replacing it cannot touch anything but the project's own mentions.
PROJECT_NAME = "Lock Source Of The Template"
SLUG = "lock-source-of-the-template"
SLUG_IN_TEMPLATE = "{{ cookiecutter.project_slug }}"


def pins(lock: str) -> dict[str, str]:
    """{package: version (and markers)} of a lock's requirement lines."""
    found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\\n]+(?: ; [^\\\n]+)?)", lock, re.M)
    return {name: version.strip() for name, version in found}


def changes(old: str, new: str) -> list[str]:
    before, after = pins(old), pins(new)
    return [
        f"  {name}: {before.get(name, '(none)')} -> {after.get(name, '(none)')}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade", action="store_true", help="take the newest allowed versions (make upgrade)")
    target = "upgrade" if parser.parse_args().upgrade else "lock"

    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        config = home / "config.yaml"
        config.write_text(f"cookiecutters_dir: {home / 'templates'}\nreplay_dir: {home / 'replay'}\n")
        project = Path(
            cookiecutter(
                str(TEMPLATE),
                no_input=True,
                extra_context={"project_name": PROJECT_NAME},
                output_dir=str(home / "out"),
                config_file=str(config),
            )
        )
        if project.name != SLUG:
            sys.exit(f"the bake is named {project.name!r}, not {SLUG!r}: the template derives slugs differently now")
        # uv comes with the template's requirements-dev.txt: find it beside this Python even in a venv not activated.
        environ = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        done = subprocess.run(["make", "--no-print-directory", target], cwd=project, env=environ, check=False)
        if done.returncode != 0:
            return done.returncode
        for name in LOCKS:
            lock = (project / name).read_text(encoding="utf-8")
            lock = lock.replace(f"{SLUG} (pyproject.toml)", f"{SLUG_IN_TEMPLATE} (pyproject.toml)")
            if SLUG in lock:
                sys.exit(f"{name}: the project's name appears where it was not expected; nothing written")
            shipped = PROJECT / name
            old = shipped.read_text(encoding="utf-8") if shipped.exists() else ""
            shipped.write_text(lock, encoding="utf-8")
            moved = changes(old, lock)
            print(f"{name}: {len(pins(lock))} packages, {len(lock.encode()):,} bytes, {len(moved)} changed")
            if moved:
                print("\n".join(moved))
    return 0


if __name__ == "__main__":
    sys.exit(main())
