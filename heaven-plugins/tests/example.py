"""The service the library's tests serve: an App with every plugin and just enough of a /users resource
(sign-up, the admins' list and lookup, your own account) to sign in and be refused. A test fixture."""

from datetime import datetime
from pathlib import Path
from typing import Literal

import asyncpg
import msgspec
from heaven.context import Key
from msgspec import Struct

from heaven_plugins import health, jobs, logs, metrics, signin
from heaven_plugins.app import App
from heaven_plugins.config import Seconds, Size, from_env
from heaven_plugins.cors import CORS, parse_origins
from heaven_plugins.docs import Docs, Error, documented
from heaven_plugins.fields import Email, Name, Page, normal_email, not_found, path_id
from heaven_plugins.postgres import Postgres
from heaven_plugins.signin import ACCOUNTS, AUTH, USER, Accounts, Auth, Password, Passwords, Throttle, admin
from heaven_plugins.web import HTTPError, public, read, read_query, send

PROJECT = {"name": "Example service", "description": "What the library's tests serve.", "distribution": "example"}
MIGRATIONS = [signin.MIGRATIONS, jobs.MIGRATIONS, Path(__file__).with_name("migrations")]
DB: Key[Postgres] = Key("db")


class Settings(Struct, frozen=True, kw_only=True):
    """What a test may change, read from the environment as a project reads its own (config.from_env)."""

    database_url: str = "postgresql://localhost/example"
    pool_min_size: Size = 1
    pool_max_size: Size = 4
    connect_timeout: Seconds = 5.0
    acquire_timeout: Seconds = 5.0
    query_timeout: Seconds = 10.0
    tcp_user_timeout: Seconds = 10.0
    statement_cache_size: Size = 100
    database_replica_urls: str = ""  # read replicas, separated by spaces
    max_replica_lag: Seconds = 5.0
    max_body_bytes: int = 1_048_576
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True
    metrics: bool = True
    debug: bool = False
    token_secret: str = ""
    token_ttl: Seconds = 3600.0
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    hash_threads: Size = 0
    hash_queue: int = 64
    hash_wait: Seconds = 5.0
    sign_in_limit: int = 5
    sign_in_address_limit: int = 50
    sign_in_window: Seconds = 900.0
    cors_origins: str = ""
    drain_seconds: float = 0.0
    jobs_every: Seconds = 15.0
    public_url: str = "http://127.0.0.1:8000"
    verify_ttl: Seconds = 3 * 86400.0
    reset_ttl: Seconds = 3600.0
    change_ttl: Seconds = 86400.0
    reset_limit: int = 3
    mail_limit: int = 10
    unverified_may_sign_in: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        """The settings from `environ` (default: the process's environment), no .env file."""
        return from_env(cls, environ, env_file=None)


def create_app(settings: Settings) -> App:
    """The example service under `settings`; each app starts and stops once, so tests build their own."""
    logs.configure(settings.log_level)
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
    passwords = Passwords(
        settings.argon2_time_cost,
        settings.argon2_memory_kib,
        settings.hash_threads,
        queue=settings.hash_queue,
        wait=settings.hash_wait,
    )
    throttle = Throttle(settings.sign_in_limit, settings.sign_in_address_limit, settings.sign_in_window)
    secrets = [secret.strip() for secret in settings.token_secret.split(",") if secret.strip()]
    auth = Auth(
        secrets,
        token_ttl=settings.token_ttl,
        passwords=passwords,
        throttle=throttle,
        unverified_may_sign_in=settings.unverified_may_sign_in,
    )
    app.plugin(auth)
    resets = Throttle(settings.reset_limit, 20 * settings.reset_limit, settings.sign_in_window)
    ttls = {"verify_ttl": settings.verify_ttl, "reset_ttl": settings.reset_ttl, "change_ttl": settings.change_ttl}
    app.plugin(Accounts(settings.public_url, **ttls, throttle=resets, mail_limit=settings.mail_limit))
    app.plugin(CORS(parse_origins(settings.cors_origins)))
    if settings.metrics:
        app.plugin(metrics)
    app.plugin(health.Health(drain=settings.drain_seconds))
    app.plugin(jobs.Jobs(settings.jobs_every))
    app.GET("/users", list_users)
    app.POST("/users", create_user)
    app.GET("/users/me", get_account)
    app.GET("/users/:id", get_user)
    app.plugin(Docs(PROJECT))
    return app


def main() -> App:
    """The app of the environment's settings: `uvicorn example:main --factory`."""
    return create_app(Settings.from_env())


class User(Struct):
    """A user, as every route answers it."""

    id: int
    email: str
    name: str
    is_active: bool
    created_at: datetime


class NewUser(Struct, forbid_unknown_fields=True):
    """The body of POST /users."""

    email: Email
    name: Name
    password: Password

    def __post_init__(self) -> None:
        self.email = normal_email(self.email)


decode_new_user = msgspec.json.Decoder(NewUser).decode
COLUMNS = "id, email, name, is_active, created_at"


@admin
@documented(query=Page, responses={200: list[User], 422: Error})
async def list_users(req, res, ctx):
    """Users in id order, a page at a time."""
    page = read_query(req, Page)
    sql = f"SELECT {COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
    send(res, await ctx.peek(DB).replica(req).fetch(sql, page.after, page.limit, bind=User))


@admin
@documented(responses={200: User, 404: Error})
async def get_user(req, res, ctx):
    """One user by id."""
    sql = f"SELECT {COLUMNS} FROM users WHERE id = $1"
    user = await ctx.peek(DB).replica(req).fetchrow(sql, path_id(req, "user"), bind=User)
    if user is None:
        raise not_found("user", req.params["id"])
    send(res, user)


@public
@documented(body=NewUser, responses={201: User, 400: Error, 409: Error, 413: Error, 422: Error})
async def create_user(req, res, ctx):
    """Sign up: 201 with the user, 409 if the email is taken."""
    new = read(req, decode_new_user)
    password_hash = await ctx.peek(AUTH).passwords.hash(new.password)
    insert = f"INSERT INTO users (email, name, password_hash) VALUES ($1, $2, $3) RETURNING {COLUMNS}"
    try:
        # The user and the mail of their verification link: both, or neither.
        async with ctx.peek(DB).transaction() as tx:
            user = await tx.fetchrow(insert, new.email, new.name, password_hash, bind=User)
            await ctx.peek(ACCOUNTS).send_verification(tx, user.id, user.email)
    except asyncpg.UniqueViolationError:
        raise HTTPError(409, "conflict", f"a user with email {new.email!r} already exists", "email") from None
    res.headers = "Location", f"/users/{user.id}"
    send(res, user, 201)


@documented(responses={200: User, 404: Error})
async def get_account(req, res, ctx):
    """Your own user: the one whose token this request carries."""
    user = await ctx.peek(DB).fetchrow(f"SELECT {COLUMNS} FROM users WHERE id = $1", ctx.peek(USER).id, bind=User)
    if user is None:
        raise HTTPError(404, "not_found", "the user of this token no longer exists")
    send(res, user)
