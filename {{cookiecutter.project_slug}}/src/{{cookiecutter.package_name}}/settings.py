"""Settings: the environment (and an optional .env file) read once into one typed Struct."""

from pathlib import Path
from typing import Annotated, Literal

import msgspec
from heaven_plugins.config import Seconds, Size, from_env
from heaven_plugins.cors import parse_origins


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of the service; each field is read from the variable of its name in capitals."""

    database_url: str = "postgresql://localhost:5432/{{ cookiecutter.package_name }}"
    pool_min_size: Size = 2
    pool_max_size: Annotated[int, msgspec.Meta(ge=1)] = 10
    # Every request ends within max(ACQUIRE_TIMEOUT, CONNECT_TIMEOUT) + QUERY_TIMEOUT + 2 s (17 s by default),
    # and shutdown within 2 s more (19 s): see the README's "When the database goes away".
    connect_timeout: Seconds = 5.0
    acquire_timeout: Seconds = 5.0
    query_timeout: Seconds = 10.0
    # The kernel closes a connection to Postgres whose data or keepalive probes go unacknowledged this long.
    tcp_user_timeout: Seconds = 10.0
    # Read replicas: URLs separated by spaces. The reads a handler lets a replica serve (GET /users, GET /users/:id)
    # go to them in turn, to the primary while a replica lags more than MAX_REPLICA_LAG seconds or is down, and to
    # the primary too until a replica has replayed what this client wrote (README: "Failover and read replicas").
    database_replica_urls: str = ""
    max_replica_lag: Seconds = 5.0
    # 0 turns prepared statements off, which PgBouncer in transaction mode needs.
    statement_cache_size: Size = 100
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1_048_576
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # One JSON line per request (heaven_plugins.logs); uvicorn's own access line is always off.
    access_log: bool = True
    # GET /metrics in Prometheus' text format (heaven_plugins.metrics); off, the route is gone and nothing is counted.
    metrics: bool = True
    # Tracebacks go to the client only when this is on: never in production.
    debug: bool = False

    # Sign-in (heaven_plugins.signin). The secret that signs tokens, made for each project in .env; the app
    # refuses to start without one. Comma-separated, the first signs and every one verifies.
    token_secret: str = ""
    token_ttl: Seconds = 3600.0
    # argon2id's cost; argon2-cffi's defaults (RFC 9106, low memory). A change rehashes at sign-in.
    argon2_time_cost: Annotated[int, msgspec.Meta(ge=1)] = 3
    argon2_memory_kib: Annotated[int, msgspec.Meta(ge=32)] = 65536
    # Threads that hash passwords; 0: from the container's CPU quota, no more than its memory limit holds at
    # ARGON2_MEMORY_KIB each (heaven_plugins.signin.passwords). Work that finds them all busy waits, sign-ins
    # before sign-ups, at most HASH_WAIT seconds and HASH_QUEUE to a lane; what would wait longer is answered
    # 503 with Retry-After.
    hash_threads: Size = 0
    hash_queue: Annotated[int, msgspec.Meta(ge=1)] = 64
    hash_wait: Seconds = 5.0
    # Failed sign-ins allowed per email, and per client address, in each window of seconds.
    sign_in_limit: Annotated[int, msgspec.Meta(ge=1)] = 5
    sign_in_address_limit: Annotated[int, msgspec.Meta(ge=1)] = 50
    sign_in_window: Seconds = 900.0
    # Seconds between SIGTERM and the listener closing, while /health answers 503 `draining` so that a proxy that
    # checks it sends no more requests (heaven_plugins.health.Health); longer than the proxy takes to mark a server
    # down. 0: stop at once, as with nothing in front (deploy/haproxy: 3). At most 300: SIGTERM must end a process.
    drain_seconds: Annotated[float, msgspec.Meta(ge=0, le=300)] = 0.0
    # Origins whose pages browsers may let call the API (comma-separated); empty, no CORS at all.
    cors_origins: str = ""

    # Accounts (heaven_plugins.signin.accounts). Links in mail are PUBLIC_URL + /verify?token=...,
    # /reset-password?token=... and /change-email?token=...: pages of the front end, which POST the token back.
    public_url: str = "http://127.0.0.1:8000"
    # Seconds a verification link, a password reset link, and an address change's link works.
    verify_ttl: Seconds = 3 * 86400.0
    reset_ttl: Seconds = 3600.0
    change_ttl: Seconds = 86400.0
    # Links asked for (resets, verification links: per email; address changes: per user) from one client
    # address, in each SIGN_IN_WINDOW; then 429.
    reset_limit: Annotated[int, msgspec.Meta(ge=1)] = 3
    # false: a user signs in only once their address is verified.
    unverified_may_sign_in: bool = True
    # Mail (heaven_plugins.mail), sent by the worker: the SMTP server, its TLS ("starttls" on 587, "tls" on
    # 465, "none" for a server on this machine or in compose, such as Mailpit), credentials, and the sender.
    smtp_host: str = "127.0.0.1"
    smtp_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1025
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str = ""
    smtp_password: str = ""
    mail_from: str = "{{ cookiecutter.project_slug }} <noreply@example.com>"
    # The worker (heaven_plugins.jobs): jobs run at once, tries of a failing one (then it is held as failed),
    # and seconds after which a job whose worker died is run again.
    job_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 4
    job_attempts: Annotated[int, msgspec.Meta(ge=1)] = 5
    job_heartbeat: Seconds = 30.0
    # Seconds between two reads of the job queue's figures for /metrics.
    jobs_every: Seconds = 15.0
    # `python -m {{ cookiecutter.package_name }}.dev` runs the worker in its own process, so that mail goes out with
    # nothing else started; false: run `python -m {{ cookiecutter.package_name }}.worker` beside it. Dev only.
    dev_worker: bool = True

    def __post_init__(self) -> None:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("POOL_MIN_SIZE is greater than POOL_MAX_SIZE")
        try:
            parse_origins(self.cors_origins)
        except ValueError as exc:
            raise ValueError(f"CORS_ORIGINS: {exc}") from None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, env_file: Path | None = Path(".env")) -> "Settings":
        """Read the settings: the environment wins over a running dev server's .dev.env, which wins over .env."""
        return from_env(cls, environ, env_file)
