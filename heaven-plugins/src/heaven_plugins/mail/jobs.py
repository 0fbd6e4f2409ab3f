"""Mail as a job: put on the queue in the caller's transaction, rendered and sent by the worker."""

from typing import Any

from msgspec import Struct, convert

from ..jobs import Handler, Job, enqueue
from .mailer import Mailer
from .templates import Templates

JOB = "mail.send"  # the job's name on the queue


class MailJob(Struct, frozen=True):
    """A job's payload: whom to, which template, what to fill it with."""

    to: str
    template: str
    values: dict[str, Any]


async def enqueue_mail(db, to: str, template: str, values: dict[str, Any]) -> int:
    """Queue the mail `template` with `values` for `to`, in `db`'s transaction; returns the job's id.

    The values wait in the queue's table until the mail is sent: a link with a token in it is there for
    that long, as it is in the mailbox it goes to."""
    return await enqueue(db, JOB, MailJob(to, template, values))


def sender(mailer: Mailer, templates: Templates) -> Handler:
    """The worker's handler of JOB: render the message, send it."""

    async def send_mail(job: Job) -> None:
        mail = convert(job.payload, MailJob)
        await mailer.send(mail.to, templates.render(mail.template, mail.values))

    return send_mail
