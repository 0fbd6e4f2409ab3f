"""Dockerfile, compose, CI workflow and developer commands, checked by reading them: no Docker engine runs here,
so nothing in this file builds an image or starts a container."""

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import yaml
from conftest import needs


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each line of a Dockerfile, continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def final_stage(steps):
    start = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[start:]


def check_schema(path, schema: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_non_root_and_healthchecked(default_project):
    steps = instructions((default_project.path / "Dockerfile").read_text())
    assert sum(op == "FROM" for op, _ in steps) >= 2
    final = final_stage(steps)
    ops = [op for op, _ in final]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}
    assert ops.index("USER") < ops.index("CMD")
    # The final image takes the built virtualenv, not the build tools or the source tree.
    copies = [args for op, args in final if op == "COPY"]
    assert copies and all(args.startswith("--from=") for args in copies)
    (healthcheck,) = [args for op, args in final if op == "HEALTHCHECK"]
    assert "/health/live" in healthcheck  # liveness: a restart cures no database outage
    (cmd,) = [json.loads(args) for op, args in final if op == "CMD"]
    assert cmd[0] == "uvicorn" and cmd[1] == f"{default_project.package}.app:app"
    assert "--no-access-log" in cmd  # the app logs each request itself, as JSON


def test_the_image_serves_with_the_edge_limits_and_believes_no_proxy(default_project):
    final = final_stage(instructions((default_project.path / "Dockerfile").read_text()))
    (cmd,) = [json.loads(args) for op, args in final if op == "CMD"]
    # The limits on headers, bodies, idle and too many connections (heaven_plugins.server); Kubernetes runs this
    # CMD too.
    assert cmd[cmd.index("--http") + 1] == "heaven_plugins.server:HTTPProtocol"
    # Unset, uvicorn would believe X-Forwarded-For from any client on the same host.
    env = [shlex.split(args) for op, args in final if op == "ENV"]
    assert ["FORWARDED_ALLOW_IPS="] in env, env
    # JSON lines for the collector even under `docker run -it`, whose terminal would get the console lines.
    assert ["LOG_FORMAT=json"] in env, env
    services = yaml.safe_load((default_project.path / "docker-compose.yml").read_text())["services"]
    for name in ("app", "app-pgbouncer"):
        assert services[name]["environment"]["FORWARDED_ALLOW_IPS"] == "${FORWARDED_ALLOW_IPS:-}", name


def test_the_image_installs_the_runtime_lock_with_hashes_required(default_project):
    steps = instructions((default_project.path / "Dockerfile").read_text())
    build = steps[: [op for op, _ in steps].index("FROM", 1)]
    installs = [args for op, args in build if op == "RUN" and "pip install" in args]
    assert any("--require-hashes -r requirements.txt" in args for args in installs), installs
    # The project itself adds nothing the lock did not pin.
    assert all("--no-deps" in args for args in installs if "requirements.txt" not in args), installs
    copies = [args for op, args in build if op == "COPY"]
    assert copies.index("requirements.txt ./") < copies.index("src ./src")  # code changes keep the deps' layer
    # Tags written out, no ARG in them, so that Dependabot can read the base image and propose newer ones.
    images = [args.split()[0] for op, args in steps if op == "FROM"]
    assert images == [f"python:{default_project.answers['python_version']}-slim"] * 2


def test_dependabot_proposes_pip_docker_and_actions_upgrades(default_project):
    path = default_project.path / ".github" / "dependabot.yml"
    check_schema(path, "vendor.dependabot")
    updates = yaml.safe_load(path.read_text())["updates"]
    assert {update["package-ecosystem"] for update in updates} == {"pip", "docker", "github-actions"}
    assert all(update["directory"] == "/" for update in updates)


def test_no_secret_goes_into_the_image(default_project):
    dockerfile = (default_project.path / "Dockerfile").read_text()
    for op, args in instructions(dockerfile):
        if op in {"ENV", "ARG"}:
            assert not re.search(r"PASSWORD|SECRET|DATABASE_URL|TOKEN", args, re.I), args
        if op in {"COPY", "ADD"}:
            assert ".env" not in shlex.split(args), args
    ignored = (default_project.path / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".pgdata" in ignored


def test_the_password_and_the_token_secret_live_in_dot_env_alone(default_project):
    env = dict(line.split("=", 1) for line in (default_project.path / ".env").read_text().splitlines() if "=" in line)
    for secret in (env["POSTGRES_PASSWORD"], env["TOKEN_SECRET"]):
        holders = [
            p.relative_to(default_project.path).as_posix()
            for p in default_project.path.rglob("*")
            if p.is_file() and secret in p.read_text(encoding="utf-8", errors="replace")
        ]
        assert holders == [".env"]


def test_compose_is_valid_and_orders_the_start(default_project):
    path = default_project.path / "docker-compose.yml"
    check_schema(path, "vendor.compose-spec")
    services = yaml.safe_load(path.read_text())["services"]
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["migrate"].get("restart") == "no"
    assert services["app"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert services["app"]["build"] == services["migrate"]["build"] == "."
    # Every password comes from .env through interpolation; none is written into the file.
    assert services["db"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    for name in ("migrate", "app", "app-pgbouncer"):
        url = services[name]["environment"]["DATABASE_URL"]
        assert re.fullmatch(r"postgresql://\w+:\$\{POSTGRES_PASSWORD\}@[\w-]+:5432/\w+", url), url
    assert "@db:" in services["migrate"]["environment"]["DATABASE_URL"]  # migrations bypass the pooler
    for name in ("app", "app-pgbouncer"):  # the token secret from .env too, never a default
        assert services[name]["environment"]["TOKEN_SECRET"].startswith("${TOKEN_SECRET:?")


def test_the_pgbouncer_profile_pools_transactions(default_project):
    services = yaml.safe_load((default_project.path / "docker-compose.yml").read_text())["services"]
    bouncer, app = services["pgbouncer"], services["app-pgbouncer"]
    assert app["profiles"] == ["pgbouncer"] and "pgbouncer" in bouncer["profiles"]  # the edge profile's too
    assert bouncer["environment"]["POOL_MODE"] == "transaction"
    assert bouncer["environment"]["DB_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    assert "@pgbouncer:5432/" in app["environment"]["DATABASE_URL"]
    assert str(app["environment"]["STATEMENT_CACHE_SIZE"]) == "0"
    assert app["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    # Without the profile, nothing of it starts.
    assert "profiles" not in services["app"] and "profiles" not in services["db"]


def test_ci_workflow_is_valid_and_lints_and_tests_against_postgres(bake):
    project = bake(python_version="3.12", postgres_version="15")
    path = project.path / ".github" / "workflows" / "ci.yml"
    check_schema(path, "vendor.github-workflows")
    workflow = yaml.safe_load(path.read_text())
    job = workflow["jobs"]["test"]
    assert job["services"]["postgres"]["image"] == "postgres:15"
    assert "pg_isready" in job["services"]["postgres"]["options"]
    assert job["env"]["TEST_DATABASE_URL"].startswith("postgresql://")
    steps = job["steps"]
    setup = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["python-version"] == "3.12"
    commands = " && ".join(step["run"] for step in steps if "run" in step)
    for command in (
        "make install",
        "make lock && git diff --exit-code requirements.txt requirements-dev.txt",
        "ruff check .",
        "ruff format --check .",
        "pytest",
    ):
        assert command in commands, command
    image = " && ".join(step["run"] for step in workflow["jobs"]["image"]["steps"] if "run" in step)
    assert "docker build" in image and f"import {project.package}.app" in image


TARGETS = ["install", "lock", "upgrade", "up", "down", "migrate", "dev", "test", "lint", "fmt"]


@needs(shutil.which("make"), "make")
def test_the_makefile_has_every_everyday_command(default_project):
    makefile = (default_project.path / "Makefile").read_text()
    defined = set(re.findall(r"^([a-z]+):", makefile, re.M))
    assert set(TARGETS) <= defined
    assert all(line.startswith("\t") for line in makefile.splitlines() if line.startswith((" ", "\t")))
    dry = subprocess.run(["make", "-n", *TARGETS], cwd=default_project.path, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert f"python -m {default_project.package}.dev" in dry.stdout
    assert f"python -m {default_project.package}.migrate" in dry.stdout
    assert "pip install --require-hashes -r requirements-dev.txt" in dry.stdout
    assert dry.stdout.count("uv pip compile pyproject.toml --quiet --universal --python-version 3.11") == 4


def test_pre_commit_runs_ruff(default_project):
    config = yaml.safe_load((default_project.path / ".pre-commit-config.yaml").read_text())
    entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
    assert any(entry.startswith("ruff check") for entry in entries)
    assert any(entry.startswith("ruff format") for entry in entries)


def test_the_answers_are_kept_for_cruft(bake):
    project = bake(project_name="Kept Answers", context_name="database", postgres_version="16")
    state = json.loads((project.path / ".cruft.json").read_text())
    assert set(state) >= {"template", "commit", "checkout", "context"}
    kept = state["context"]["cookiecutter"]
    answers = {k: v for k, v in project.answers.items() if not k.startswith("_")}
    assert {k: v for k, v in kept.items() if not k.startswith("_")} == answers
    # cruft update must never touch the generated secret, whether cruft or cookiecutter made the project.
    skip = tomllib.loads((project.path / "pyproject.toml").read_text())["tool"]["cruft"]["skip"]
    assert {".env", ".pgdata", ".cruft.json"} <= set(skip)


def test_the_stop_settings_agree_with_the_shutdown_bound(default_project):
    # README: requests end within max(ACQUIRE_TIMEOUT, CONNECT_TIMEOUT) + QUERY_TIMEOUT + 2 s; shutdown 2 s later.
    path = default_project.path
    env = dict(line.split("=", 1) for line in (path / ".env.example").read_text().splitlines() if "=" in line)
    bound = max(float(env["ACQUIRE_TIMEOUT"]), float(env["CONNECT_TIMEOUT"])) + float(env["QUERY_TIMEOUT"]) + 2
    final = final_stage(instructions((path / "Dockerfile").read_text()))
    assert ("STOPSIGNAL", "SIGTERM") in final
    (cmd,) = [json.loads(args) for op, args in final if op == "CMD"]
    assert float(cmd[cmd.index("--timeout-graceful-shutdown") + 1]) == bound  # requests in flight may finish
    services = yaml.safe_load((path / "docker-compose.yml").read_text())["services"]
    for name in ("app", "app-pgbouncer"):
        grace = services[name]["stop_grace_period"]
        assert grace.endswith("s") and float(grace[:-1]) >= bound + 2, (name, grace)
    assert bound + 2 <= 30 - 5  # Kubernetes' default grace period, less a preStop sleep of 5 s
