"""The worker: `python -m {{ cookiecutter.package_name }}.worker` runs the background jobs (the accounts' mail, and
yours) until SIGTERM, beside the web processes, on the same database (heaven_plugins.jobs)."""

from heaven_plugins import jobs, mail
from heaven_plugins.signin import RESET_JOB

from .accounts import TEMPLATES, accounts
from .settings import Settings


def create_worker(settings: Settings) -> jobs.Worker:
    """The worker of `settings`, with a handler for each job the project enqueues."""
    worker = jobs.Worker(
        settings.database_url,
        concurrency=settings.job_concurrency,
        attempts=settings.job_attempts,
        heartbeat=settings.job_heartbeat,
        connect_timeout=settings.connect_timeout,
    )
    mailer = mail.Mailer(
        settings.smtp_host,
        settings.smtp_port,
        settings.mail_from,
        tls=settings.smtp_tls,
        username=settings.smtp_username,
        password=settings.smtp_password,
    )
    worker.job(mail.JOB, mail.sender(mailer, mail.Templates(TEMPLATES)))
    worker.job(RESET_JOB, accounts(settings).reset_job())
    return worker


if __name__ == "__main__":
    settings = Settings.from_env()
    jobs.main(create_worker(settings), settings.log_level)
