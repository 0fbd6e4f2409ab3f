"""Settings from the environment and .env, with errors that name the variable."""

import os
import subprocess
import sys

import pytest

from {{ cookiecutter.package_name }}.settings import Settings


def test_reads_typed_values_from_the_environment():
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://u@h/d", "POOL_MAX_SIZE": "7", "DEBUG": "true", "LOG_LEVEL": "debug"},
        env_file=None,
    )
    assert (settings.database_url, settings.pool_max_size, settings.debug) == ("postgresql://u@h/d", 7, True)
    assert settings.log_level == "DEBUG"


def test_defaults_are_safe():
    settings = Settings.from_env({}, env_file=None)
    assert settings.debug is False
    assert settings.statement_cache_size > 0


def test_environment_wins_over_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text('# comment\nDATABASE_URL="postgresql://file/db"\nPOOL_MIN_SIZE=3\nUNRELATED=1\n')
    settings = Settings.from_env({"POOL_MIN_SIZE": "1"}, env_file=env_file)
    assert settings.database_url == "postgresql://file/db"
    assert settings.pool_min_size == 1


def test_a_running_dev_server_names_the_database_over_the_env_file(tmp_path):
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://docker/db\nPOOL_MIN_SIZE=3\n")
    (tmp_path / ".dev.env").write_text(f"DATABASE_URL=postgresql://dev/db\nDEV_PID={os.getpid()}\n")
    settings = Settings.from_env({}, env_file=tmp_path / ".env")
    assert (settings.database_url, settings.pool_min_size) == ("postgresql://dev/db", 3)
    environ = {"DATABASE_URL": "postgresql://exported/db"}
    assert Settings.from_env(environ, env_file=tmp_path / ".env").database_url == "postgresql://exported/db"


def test_what_a_stopped_dev_server_left_behind_is_ignored(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://docker/db\n")
    (tmp_path / ".dev.env").write_text(f"DATABASE_URL=postgresql://dev/db\nDEV_PID={gone.stdout.strip()}\n")
    assert Settings.from_env({}, env_file=tmp_path / ".env").database_url == "postgresql://docker/db"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"POOL_MAX_SIZE": "lots"}, "POOL_MAX_SIZE"),
        ({"ACQUIRE_TIMEOUT": "0"}, "ACQUIRE_TIMEOUT"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"POOL_MIN_SIZE": "20", "POOL_MAX_SIZE": "10"}, "POOL_MIN_SIZE"),
    ],
)
def test_a_bad_value_stops_with_the_variable_named(environ, named):
    with pytest.raises(SystemExit, match=named):
        Settings.from_env(environ, env_file=None)


@pytest.mark.parametrize(
    "value", ["null", "app.example.com", "https://app.example.com/path", "ftp://x.example", "*, null"]
)
def test_a_value_that_is_not_an_origin_stops_the_app_naming_cors_origins(value):
    with pytest.raises(SystemExit, match="CORS_ORIGINS"):
        Settings.from_env({"CORS_ORIGINS": value}, env_file=None)
