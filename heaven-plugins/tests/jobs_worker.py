"""A worker with jobs the tests enqueue: one that records its runs, one that always fails, one that takes its
time, and with SMTP_PORT set the accounts' mail. `python jobs_worker.py` with DATABASE_URL and the Worker's
settings in the environment. A test fixture."""

import asyncio
import os
from pathlib import Path

from heaven_plugins import jobs, mail
from heaven_plugins.signin import Accounts


async def record(job: jobs.Job) -> None:
    await job.db.execute(
        "INSERT INTO job_runs (job_id, name, attempt, what) VALUES ($1, $2, $3, 'done')", job.id, job.name, job.attempt
    )


async def fail(job: jobs.Job) -> None:
    await job.db.execute(
        "INSERT INTO job_runs (job_id, name, attempt, what) VALUES ($1, $2, $3, 'failed')",
        job.id,
        job.name,
        job.attempt,
    )
    # Its message quotes the payload, as an owner's error might: neither may reach a log or PgQueuer's table.
    raise RuntimeError(f"this job always fails: {job.payload}")


async def slow(job: jobs.Job) -> None:
    # Taken up again after a worker died mid-job: say so, and end at once.
    again = await job.db.fetchval("SELECT count(*) FROM job_runs WHERE job_id = $1 AND what = 'started'", job.id)
    await job.db.execute(
        "INSERT INTO job_runs (job_id, name, attempt, what) VALUES ($1, $2, $3, 'started')",
        job.id,
        job.name,
        job.attempt,
    )
    if not again:
        await asyncio.sleep(job.payload["seconds"])
    await record(job)


def worker() -> jobs.Worker:
    environ = os.environ
    worker = jobs.Worker(
        environ["DATABASE_URL"],
        attempts=int(environ.get("JOB_ATTEMPTS", "3")),
        first_retry=float(environ.get("JOB_FIRST_RETRY", "0.2")),
        heartbeat=float(environ.get("JOB_HEARTBEAT", "30")),
        poll=float(environ.get("JOB_POLL", "0.5")),
    )
    worker.job("record", record)
    worker.job("fail", fail)
    worker.job("slow", slow)
    if "SMTP_PORT" in environ:  # the accounts' mail, to the tests' SMTP server
        mailer = mail.Mailer("127.0.0.1", int(environ["SMTP_PORT"]), "Example <noreply@example.com>", tls="none")
        worker.job(mail.JOB, mail.sender(mailer, mail.Templates(Path(__file__).with_name("mail"))))
        accounts = Accounts(environ["PUBLIC_URL"], reset_ttl=float(environ.get("RESET_TTL", "3600")))
        accounts.register(worker)
    return worker


if __name__ == "__main__":
    jobs.main(worker())
