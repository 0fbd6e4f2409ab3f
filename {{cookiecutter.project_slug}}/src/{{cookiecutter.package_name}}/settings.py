"""Settings: the environment (and an optional .env file) read once into one typed Struct."""

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from .cors import parse_origins

# Written beside .env by `python -m <package>.dev` while it runs, naming its database (dev.py).
DEV_ENV = ".dev.env"

Seconds = Annotated[float, msgspec.Meta(gt=0)]
Size = Annotated[int, msgspec.Meta(ge=0)]


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
    # 0 turns prepared statements off, which PgBouncer in transaction mode needs.
    statement_cache_size: Size = 100
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1_048_576
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # One JSON line per request (logs.py); uvicorn's own access line is always off.
    access_log: bool = True
    # GET /metrics in Prometheus' text format (metrics.py); off, the route is gone and nothing is counted.
    metrics: bool = True
    # Tracebacks go to the client only when this is on: never in production.
    debug: bool = False

    # Sign-in (auth.py). The secret that signs tokens, made for each project in .env; the app
    # refuses to start without one. Comma-separated, the first signs and every one verifies.
    token_secret: str = ""
    token_ttl: Seconds = 3600.0
    # argon2id's cost; argon2-cffi's defaults (RFC 9106, low memory). A change rehashes at sign-in.
    argon2_time_cost: Annotated[int, msgspec.Meta(ge=1)] = 3
    argon2_memory_kib: Annotated[int, msgspec.Meta(ge=32)] = 65536
    # Threads that hash passwords; 0: from the container's CPU quota, no more than its memory limit holds at
    # ARGON2_MEMORY_KIB each (passwords.py). Work that finds them all busy waits, sign-ins before sign-ups, at
    # most HASH_WAIT seconds and HASH_QUEUE to a lane; what would wait longer is answered 503 with Retry-After.
    hash_threads: Size = 0
    hash_queue: Annotated[int, msgspec.Meta(ge=1)] = 64
    hash_wait: Seconds = 5.0
    # Failed sign-ins allowed per email, and per client address, in each window of seconds.
    sign_in_limit: Annotated[int, msgspec.Meta(ge=1)] = 5
    sign_in_address_limit: Annotated[int, msgspec.Meta(ge=1)] = 50
    sign_in_window: Seconds = 900.0
    # Origins whose pages browsers may let call the API (comma-separated); empty, no CORS at all.
    cors_origins: str = ""

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
        values = read_env_file(env_file) if env_file else {}
        if env_file:
            values.update(read_dev_env(env_file.with_name(DEV_ENV)))
        values.update(os.environ if environ is None else environ)
        names = {field.upper(): field for field in cls.__struct_fields__}
        fields = {names[key]: value for key, value in values.items() if key in names}
        if isinstance(fields.get("log_level"), str):
            fields["log_level"] = fields["log_level"].upper()
        try:
            # strict=False lets msgspec read "10" as 10 and "true" as True.
            return msgspec.convert(fields, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SystemExit(f"Invalid settings: {_upper_field(str(exc))}") from None


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, with # comments and optional quotes; a missing file is empty."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    values = {}
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key.strip()] = value
    return values


def read_dev_env(path: Path) -> dict[str, str]:
    """What a dev server wrote to `path`, if that server is still running; a file left by one that died is ignored."""
    values = read_env_file(path)
    try:
        pid = int(values.pop("DEV_PID"))
        if os.name != "nt":  # on Windows, signal 0 would be a Ctrl-C
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (KeyError, ValueError, ProcessLookupError):
        return {}
    except PermissionError:  # it exists, under another user
        pass
    return values


def _upper_field(message: str) -> str:
    # msgspec says "at `$.pool_max_size`"; people set POOL_MAX_SIZE.
    head, sep, path = message.rpartition(" - at `$.")
    return f"{path.rstrip('`').upper()}: {head}" if sep else message
