"""Background jobs on Postgres, with PgQueuer: put on the queue in the transaction of the change that causes them,
run by workers in processes of their own.

- `enqueue(tx, name, payload)` inside a transaction: the job exists if, and only if, it commits.
- `app.plugin(Jobs())` shows the queue on /metrics (queued, retrying, running, failed).
- `Worker(database_url)`, `worker.job(name, handler)`, then `main(worker)`: a project's
  `python -m <package>.worker`.

The queue's tables are PgQueuer's, made by this plugin's migration (MIGRATIONS), applied with the
project's (heaven_plugins.migrate); PgQueuer's command line (`pgq failed`, `pgq requeue`,
`pgq dashboard`) works on them.
"""

import asyncio
import logging
from pathlib import Path

from .queue import Jobs, enqueue
from .worker import Handler, Job, Worker

# The queue's migration, applied with the project's, in name order (migrate.py).
MIGRATIONS = Path(__file__).with_name("migrations")


def main(worker: Worker, log_level: str = "INFO") -> None:
    """A project's `python -m <package>.worker`: log as the web app does, and run jobs until SIGTERM."""
    from .. import logs

    logs.configure(log_level)
    # Each line written as it comes: a worker killed at once keeps what it said until then.
    logs.writer.write_through = True
    # PgQueuer says at INFO what each job did, which our own lines say in one line each.
    logging.getLogger("pgqueuer").setLevel(logging.WARNING)
    try:
        asyncio.run(worker.run())
    finally:
        logs.writer.flush()


__all__ = ["MIGRATIONS", "Handler", "Job", "Jobs", "Worker", "enqueue", "main"]
