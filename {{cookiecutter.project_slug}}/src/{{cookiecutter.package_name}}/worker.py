"""The worker: `python -m {{ cookiecutter.package_name }}.worker` runs the background jobs (the accounts' mail, and
yours) until SIGTERM, beside the web processes, on the same database (heaven_plugins.jobs)."""

from heaven_plugins import jobs, mail

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
    worker.job(mail.JOB, mail.sender(mailer(settings), mail.Templates(TEMPLATES)))
    accounts(settings).register(worker)  # the jobs that look an address up before mailing it a link
    return worker


def mailer(settings: Settings) -> mail.Mailer:
    """The SMTP server of `settings`, and who mail comes from."""
    return mail.Mailer(
        settings.smtp_host,
        settings.smtp_port,
        settings.mail_from,
        tls=settings.smtp_tls,
        username=settings.smtp_username,
        password=settings.smtp_password,
    )


if __name__ == "__main__":
    settings = Settings.from_env()
    jobs.main(create_worker(settings), settings.log_level)
