"""The harness's environment: its venv, wrk and valgrind, and a fresh bake of the template installed into the venv.

Stdlib only: this runs before the venv exists.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TEMPLATE = BENCH.parent
WORK = BENCH / ".work"
VENV = BENCH / ".venv"
REQUIREMENTS = BENCH / "requirements.txt"
SLUG, PACKAGE = "heaven-service", "heaven_service"  # the cookiecutter defaults


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    """bench/.venv with requirements.txt installed; reinstalled only when that file changes. A run that finds
    another building it waits for that one (CI builds it beside the suite's own install)."""
    WORK.mkdir(exist_ok=True)
    with open(WORK / "venv.lock", "w") as lock:
        deadline = time.monotonic() + 1800  # longer than a build may take: pip's own bounds below
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"bench: another run has been building {VENV} for 30 minutes") from None
                time.sleep(1)
        return _ensure_venv()


def _ensure_venv() -> Path:
    stamp = VENV / ".requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if venv_python().exists() and stamp.exists() and stamp.read_text() == wanted:
        return venv_python()
    print(f"bench: creating {VENV} (once; a minute or two)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip("install", "--upgrade", "pip", timeout=300)
    pip("install", "-r", str(REQUIREMENTS), timeout=900)
    stamp.write_text(wanted)
    return venv_python()


def pip(*args: str, timeout: float, python: Path | None = None) -> None:
    # -qq: errors only; a pip.conf with find-links that do not exist here would warn on every run.
    subprocess.run(
        [str(python or venv_python()), "-m", "pip", "-qq", "--disable-pip-version-check", *args],
        check=True,
        timeout=timeout,
    )


def bake_and_install(python: Path) -> Path:
    """Bake the template's defaults into .work/ and install that project, its library and their dependencies,
    for `python`."""
    out = WORK / "bake"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run(
        [str(python), "-m", "cookiecutter", "--no-input", str(TEMPLATE), "-o", str(out)],
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(out)},  # cookiecutter leaves a copy of each hook in TMPDIR
    )
    project = out / SLUG
    # --no-build-isolation uses the venv's hatchling instead of fetching one per run; the baked
    # project's own dependencies still come from its pyproject.toml. The first install replaces
    # the previous bake and its library (vendor/heaven-plugins, not yet on PyPI), the second adds
    # any dependency either lacks.
    library = project / "vendor" / "heaven-plugins"
    both = (str(library), str(project))
    pip("install", "--no-build-isolation", "--force-reinstall", "--no-deps", *both, timeout=300, python=python)
    pip("install", "--no-build-isolation", *both, timeout=600, python=python)
    return project


def ensure_debian_command(name: str) -> str:
    """The path of the command `name`, installed from Debian's package of that name when it is missing and we may."""
    found = shutil.which(name)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(f"bench: {name} is not installed; `apt-get install {name}` (Debian/Ubuntu) and run again")
    print(f"bench: installing {name} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", name], check=True, timeout=600, env=env, stdout=subprocess.DEVNULL
    )
    return shutil.which(name) or f"/usr/bin/{name}"


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


if __name__ == "__main__":  # the venv alone, as .ci/run builds it ahead of the suite
    print(f"bench: {ensure_venv()} ready", flush=True)
