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
    """Fill .env from .env.example with a password made for this bake alone.

    The password never passes through cookiecutter's answers, so it never
    reaches the replay file; .env itself is git-ignored.
    """
    password = secrets.token_urlsafe(24)
    template = (project / ".env.example").read_text(encoding="utf-8")
    env = project / ".env"
    env.write_text(template.replace("change-me", password), encoding="utf-8")
    env.chmod(0o600)


if __name__ == "__main__":
    write_env(Path.cwd())
    print(
        f"\nBaked {ANSWERS['project_slug']}. Next:\n"
        f"  cd {ANSWERS['project_slug']}\n"
        "  python -m venv .venv && . .venv/bin/activate && make install\n"
        "  pytest                                       # the tests, no Docker needed\n"
        f"  docker compose up -d db && python -m {ANSWERS['package_name']}.migrate"
        f" && uvicorn {ANSWERS['package_name']}.app:app\n"
    )
