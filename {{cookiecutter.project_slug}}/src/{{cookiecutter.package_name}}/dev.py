"""Local development without Docker: `python -m {{ cookiecutter.package_name }}.dev`.

Serves with reload on port 8000, applying new migrations at each start, on DATABASE_URL if the
environment sets it, else on a Postgres of its own whose data stays in .pgdata/ (heaven_plugins.dev).
"""

from heaven_plugins import dev
from heaven_plugins.app import App

from .app import PROJECT, create_app
from .migrate import MIGRATIONS
from .settings import Settings


def create_dev_app() -> App:
    """The app of app.py, applying new migrations as it starts; only here, never in production."""
    settings = Settings.from_env()
    return dev.migrating(create_app(settings), settings.database_url, MIGRATIONS)


if __name__ == "__main__":
    dev.main(f"{__package__}.dev:create_dev_app", PROJECT["name"])
