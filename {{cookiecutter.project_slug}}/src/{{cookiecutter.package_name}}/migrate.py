"""Migrations: `python -m {{ cookiecutter.package_name }}.migrate` applies the new ones to DATABASE_URL.

This project's are in migrations/; sign-in and the job queue bring their own. All are applied in one name order,
each once (heaven_plugins.migrate), so a new one is named after the last: 0006_<what>.sql.
"""

from pathlib import Path

from heaven_plugins import jobs, migrate, signin

from .settings import Settings

MIGRATIONS = [signin.MIGRATIONS, jobs.MIGRATIONS, Path(__file__).with_name("migrations")]

if __name__ == "__main__":
    settings = Settings.from_env()
    migrate.main(settings.database_url, MIGRATIONS, settings.connect_timeout)
