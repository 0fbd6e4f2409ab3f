"""Settings from the environment: a msgspec Struct read from the variables named after its fields, in
capitals, over a running dev server's .dev.env, over an optional .env file."""

import os
from pathlib import Path
from typing import Annotated, TypeVar

import msgspec

# Written beside .env by the dev server while it runs, naming its database (dev.py).
DEV_ENV = ".dev.env"

Seconds = Annotated[float, msgspec.Meta(gt=0)]
Size = Annotated[int, msgspec.Meta(ge=0)]

S = TypeVar("S", bound=msgspec.Struct)


def from_env(cls: type[S], environ: dict[str, str] | None = None, env_file: Path | None = Path(".env")) -> S:
    """`cls` read from the environment, which wins over a running dev server's .dev.env, which wins over
    `env_file`; a value that does not fit exits naming its variable (`POOL_MAX_SIZE: Expected ...`)."""
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
