"""The service: settings, the Postgres, sign-in, accounts, jobs, CORS and metrics plugins and the routes, put
together. Serve it with `uvicorn {{ cookiecutter.package_name }}.app:app`."""

import gc
from pathlib import Path

from heaven_plugins import logs, metrics
from heaven_plugins.app import App
from heaven_plugins.cors import CORS, parse_origins
from heaven_plugins.docs import Docs, read_project
from heaven_plugins.health import Health
from heaven_plugins.jobs import Jobs
from heaven_plugins.postgres import Postgres
from heaven_plugins.signin import Auth, Passwords, Throttle

from . import users
from .accounts import accounts
from .resources import DB
from .settings import Settings

# The name, description and distribution the OpenAPI document (/docs) and dev's banner give.
PROJECT = read_project(Path(__file__).with_name("project.json"))

# Python's collector looks at its youngest objects every 700 container allocations net of frees, and
# answering a request makes thousands, nearly all freed by the end of it. Every 7,000 instead: 4 % fewer
# instructions a request (bench/README.md), for at most 6,300 more objects waiting for a collection.
GC_YOUNGEST = 7_000


def create_app(settings: Settings) -> App:
    """A new app for `settings`; each app starts and stops once, so tests build their own."""
    configure_logging(settings.log_level)
    gc.set_threshold(GC_YOUNGEST, *gc.get_threshold()[1:])
    app = App(debug=settings.debug, max_body_size=settings.max_body_bytes, access_log=settings.access_log)
    app.plugin(
        Postgres(
            settings.database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            connect_timeout=settings.connect_timeout,
            acquire_timeout=settings.acquire_timeout,
            query_timeout=settings.query_timeout,
            statement_cache_size=settings.statement_cache_size,
            tcp_user_timeout=settings.tcp_user_timeout,
            replicas=settings.database_replica_urls.split(),
            max_replica_lag=settings.max_replica_lag,
            name=DB.name,
        )
    )
    # Before the routes: every route registered after it needs a token unless marked public.
    app.plugin(
        Auth(
            [secret.strip() for secret in settings.token_secret.split(",") if secret.strip()],
            token_ttl=settings.token_ttl,
            passwords=Passwords(
                settings.argon2_time_cost,
                settings.argon2_memory_kib,
                settings.hash_threads,
                queue=settings.hash_queue,
                wait=settings.hash_wait,
            ),
            throttle=Throttle(settings.sign_in_limit, settings.sign_in_address_limit, settings.sign_in_window),
            unverified_may_sign_in=settings.unverified_may_sign_in,
        )
    )
    app.plugin(accounts(settings))
    app.plugin(Jobs(settings.jobs_every))
    app.plugin(CORS(parse_origins(settings.cors_origins)))
    if settings.metrics:
        app.plugin(metrics)
    app.plugin(Health(drain=settings.drain_seconds))
    app.plugin(users)
    app.plugin(Docs(PROJECT))
    return app


def configure_logging(level: str) -> None:
    """Every log record of the process, uvicorn's and asyncpg's included, to stderr at `level`, written
    off the request path: one JSON object a line, or a short line for a person when stderr is a
    terminal or LOG_FORMAT=console (heaven_plugins.logs)."""
    logs.configure(level)


app = create_app(Settings.from_env())
