"""Mail: messages rendered from a project's templates and sent over SMTP by a job, never inside a request.

- `await enqueue_mail(tx, to, template, values)` inside the transaction of the change that causes it
  (a sign-up, a reset): the job exists only if that commits.
- In the worker, `worker.job(JOB, sender(Mailer(...), Templates(directory)))` renders and sends it;
  a failure to send is tried again by the worker (heaven_plugins.jobs).

A template is two or three files of a directory the project keeps: `<name>.subject.txt`, `<name>.txt`
(the plain-text body) and, optionally, `<name>.html`, rendered with Jinja (HTML escaped).
"""

from .jobs import JOB, enqueue_mail, sender
from .mailer import Mailer, mask
from .templates import Message, Templates

__all__ = ["JOB", "Mailer", "Message", "Templates", "enqueue_mail", "mask", "sender"]
