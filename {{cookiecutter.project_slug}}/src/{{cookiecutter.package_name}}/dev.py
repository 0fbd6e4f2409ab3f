"""Local development without Docker: `python -m {{ cookiecutter.package_name }}.dev`.

Serves with reload on port 8000, applying new migrations at each start, on DATABASE_URL if the
environment sets it, else on a Postgres of its own whose data stays in .pgdata/ (heaven_plugins.dev); runs
the worker in the same process unless DEV_WORKER=false, and says where mail goes.
"""

from heaven_plugins import dev
from heaven_plugins.app import App

from .app import PROJECT, create_app
from .migrate import MIGRATIONS
from .settings import Settings
from .worker import create_worker, mailer


def create_dev_app() -> App:
    """The app of app.py, applying new migrations as it starts, and running the worker (DEV_WORKER); only here,
    never in production."""
    settings = Settings.from_env()
    app = dev.migrating(create_app(settings), settings.database_url, MIGRATIONS)
    return dev.working(app, create_worker(settings)) if settings.dev_worker else app


if __name__ == "__main__":
    settings = Settings.from_env()
    sender = "the worker dev runs" if settings.dev_worker else f"python -m {__package__}.worker (DEV_WORKER=false)"
    dev.main(f"{__package__}.dev:create_dev_app", PROJECT["name"], dev.where_mail_goes(mailer(settings), sender))
