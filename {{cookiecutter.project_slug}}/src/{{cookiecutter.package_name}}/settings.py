"""Settings: the environment (and an optional .env file) read once into one typed Struct."""

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec

Seconds = Annotated[float, msgspec.Meta(gt=0)]
Size = Annotated[int, msgspec.Meta(ge=0)]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of the service; each field is read from the variable of its name in capitals."""

    database_url: str = "postgresql://localhost:5432/{{ cookiecutter.package_name }}"
    pool_min_size: Size = 2
    pool_max_size: Annotated[int, msgspec.Meta(ge=1)] = 10
    connect_timeout: Seconds = 5.0
    acquire_timeout: Seconds = 5.0
    query_timeout: Seconds = 30.0
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

    def __post_init__(self) -> None:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("POOL_MIN_SIZE is greater than POOL_MAX_SIZE")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, env_file: Path | None = Path(".env")) -> "Settings":
        """Read the settings; variables already in the environment win over the .env file."""
        values = read_env_file(env_file) if env_file else {}
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


def _upper_field(message: str) -> str:
    # msgspec says "at `$.pool_max_size`"; people set POOL_MAX_SIZE.
    head, sep, path = message.rpartition(" - at `$.")
    return f"{path.rstrip('`').upper()}: {head}" if sep else message
