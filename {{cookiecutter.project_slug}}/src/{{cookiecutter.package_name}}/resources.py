"""What this project's resources share beyond heaven_plugins.fields (ids, pages, text and email types):
the key the database has on each request's context, `ctx.peek(DB)`."""

from heaven.context import Key
from heaven_plugins.postgres import Postgres

DB: Key[Postgres] = Key("{{ cookiecutter.context_name }}")
