"""Settings from the environment and .env, with errors that name the variable."""

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
