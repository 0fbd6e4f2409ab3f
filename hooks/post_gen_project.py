"""Give the baked project its own secrets and say what to do next."""

import json
import secrets
from pathlib import Path

ANSWERS = json.loads(
    r"""
{{ {
    "project_slug": cookiecutter.project_slug,
    "package_name": cookiecutter.package_name,
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


if __name__ == "__main__":
    write_env(Path.cwd())
    print(
        f"\nBaked {ANSWERS['project_slug']}. Next:\n"
        f"  cd {ANSWERS['project_slug']}\n"
        "  python -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]'\n"
        "  pytest                                       # the tests, no Docker needed\n"
        f"  docker compose up -d db && python -m {ANSWERS['package_name']}.migrate"
        f" && uvicorn {ANSWERS['package_name']}.app:app\n"
    )
