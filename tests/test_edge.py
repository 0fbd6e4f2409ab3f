"""The edge: the real HAProxy with the baked deploy/haproxy/haproxy.cfg in front of the baked service on loopback. It
refuses an oversized header and cuts a slow one off within its bound, and the app sees the client's real address from
the proxy and never one a client claims."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import FAST_HASHING, Baked, Service, free_port, needs
from test_pgbouncer import migrate

HAPROXY = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")
pytestmark = needs(HAPROXY, "haproxy")
CONFIG = Path("deploy", "haproxy", "haproxy.cfg")
# How the image serves (Dockerfile): the HTTP edge's protocol, which applies FORWARDED_ALLOW_IPS.
PROTOCOL = ("--http", "heaven_plugins.server:HTTPProtocol")
CLAIMED = "203.0.113.9"  # an address a client claims in X-Forwarded-For
CLIENT = "127.0.0.2"  # the address the tests' clients connect from: loopback, but not the proxy's 127.0.0.1
BOUNDS = {"HTTP_HEADER_TIMEOUT": "1", "HTTP_BODY_TIMEOUT": "1"}  # seconds, for the proxy in front (`front`)


def edge_config(project: Baked, servers: dict[str, int]) -> str:
    """The shipped config with its replicas on loopback ports: its one `server-template` line (compose's replicas,
    found through Docker's DNS) becomes a `server` line a replica; every other line is the shipped one."""
    lines = (project.path / CONFIG).read_text().splitlines()
    (at,) = [n for n, line in enumerate(lines) if line.split()[:1] == ["server-template"]]
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    lines[at : at + 1] = [f"{indent}server {name} 127.0.0.1:{port}" for name, port in servers.items()]
    return "\n".join(lines) + "\n"


class Edge:
    """HAProxy running the shipped config: its URL, its log lines, and its view of the replicas."""

    def __init__(self, project: Baked, servers: dict[str, int], folder: Path, **environ: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_port = free_port()  # on loopback: a unix socket's path is limited to 97 bytes, pytest's are longer
        config = folder / "haproxy.cfg"
        config.write_text(edge_config(project, servers))
        # A second file for the test alone: the runtime API, to read which replicas HAProxy has up.
        (folder / "stats.cfg").write_text(f"global\n    stats socket ipv4@127.0.0.1:{self.api_port} level admin\n")
        env = {**os.environ, "EDGE_BIND": f"127.0.0.1:{self.port}", **environ}
        command = [HAPROXY, "-db", "-f", str(config), "-f", str(folder / "stats.cfg")]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{self.stop()}")
            time.sleep(0.05)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def command(self, line: str) -> str:
        """A command of HAProxy's runtime API, and its answer."""
        with socket.create_connection(("127.0.0.1", self.api_port), timeout=5) as sock:
            sock.sendall(line.encode() + b"\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer.decode()

    def states(self) -> dict[str, str]:
        """{replica: UP, DOWN, ...} as HAProxy sees them now."""
        rows = [row.split(",") for row in self.command("show stat").splitlines() if row and not row.startswith("#")]
        return {row[1]: row[17].split()[0] for row in rows if row[0] == "app" and row[1] not in {"BACKEND"}}

    def wait_for(self, expected: dict[str, str], timeout: float = 10) -> float:
        """Wait until the named replicas are in these states; the seconds it took."""
        started = time.monotonic()
        while True:
            states = self.states()
            if all(states.get(name) == state for name, state in expected.items()):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"replicas {states}, not {expected}, after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        self.process.stdout.close()
        return "".join(self.lines)


@pytest.fixture
def edge(tmp_path):
    """`edge(project, {name: port}, **environ)` runs HAProxy with the shipped config in front of those replicas."""
    started: list[Edge] = []

    def edge(project: Baked, servers: dict[str, int], **environ: str) -> Edge:
        folder = tmp_path / f"edge-{len(started)}"
        folder.mkdir()
        started.append(Edge(project, servers, folder, **environ))
        return started[-1]

    yield edge
    for proxy in started:
        proxy.stop()


def from_client(timeout: float = 10, **kwargs) -> httpx.Client:
    """An HTTP client whose connections come from CLIENT, not the proxy's address."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT), timeout=timeout, **kwargs)


def access_lines(output: str) -> list[dict]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == "request"]


@pytest.fixture(scope="module")
def migrated(default_project, new_database) -> str:
    url = new_database()
    migrate(default_project, url)
    return url


@pytest.fixture(scope="module")
def front(default_project, migrated, tmp_path_factory) -> Iterator[tuple[Service, Edge]]:
    """One replica, served as the image serves it and believing the proxy's address, behind the shipped config;
    the header and body bounds (HTTP_HEADER_TIMEOUT and HTTP_BODY_TIMEOUT, 10 and 15 s shipped) set to 1 s to keep
    the slow-client tests short."""
    app = Service(default_project, migrated, PROTOCOL, FORWARDED_ALLOW_IPS="127.0.0.1").start()
    try:
        proxy = Edge(default_project, {"app1": app.port}, tmp_path_factory.mktemp("edge"), **BOUNDS)
        try:
            proxy.wait_for({"app1": "UP"})
            yield app, proxy
        finally:
            proxy.stop()
    finally:
        app.stop(signal.SIGKILL)


def logged(app: Service, request_id: str, timeout: float = 5) -> dict:
    """The access line of the request `request_id`, once the app has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in access_lines(app.output):
            if line["request_id"] == request_id:
                return line
        time.sleep(0.02)
    raise TimeoutError(f"no access line for {request_id} within {timeout} s")


def test_an_oversized_header_is_refused_at_the_edge_and_never_reaches_the_app(front):
    app, proxy = front
    with from_client() as http:
        # 20 KiB of headers do not fit the proxy's 15 KiB; 10 KiB do.
        big = {"X-Big": "a" * 20_000, "X-Request-ID": "oversized-1"}
        refused = http.get(f"{proxy.url}/health/live", headers=big)
        fits = http.get(f"{proxy.url}/health/live", headers={"X-Big": "a" * 10_000, "X-Request-ID": "fits-1"})
    assert refused.status_code == 400, refused.text
    assert fits.status_code == 200, fits.text
    assert logged(app, "fits-1")["status"] == 200
    assert "oversized-1" not in app.output  # sent first, answered by the proxy alone


def test_a_slow_header_is_cut_off_within_the_configured_bound(front):
    app, proxy = front
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5, source_address=(CLIENT, 0)) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: edge\r\nX-Request-ID: slow-1\r\n")
        answer, closed_after = b"", None
        # A header byte every 0.2 s, never the end of the headers: the connection must close within the bound.
        while closed_after is None and time.monotonic() - started < 5:
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
            sock.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                chunk = sock.recv(65536)
                answer += chunk
                if not chunk:
                    closed_after = time.monotonic() - started
    assert closed_after is not None, "the slow client was never cut off"
    assert 0.9 <= closed_after <= 2.0, closed_after  # the 1 s bound, and room for a busy machine to see it
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert "slow-1" not in app.output


def test_a_stalled_body_is_cut_off_and_an_oversized_one_refused_before_it_is_read(front):
    app, proxy = front
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5, source_address=(CLIENT, 0)) as sock:
        started = time.monotonic()
        head = b"POST /users HTTP/1.1\r\nHost: edge\r\nX-Request-ID: stalled-1\r\nContent-Length: 100\r\n\r\n{"
        sock.sendall(head)
        answer = sock.recv(65536)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.9 <= took <= 2.0, took
    with from_client() as http:
        big = http.post(f"{proxy.url}/users", content=b"x" * 2_000_000, headers={"X-Request-ID": "big-1"})
    assert big.status_code == 413, big.text  # MAX_BODY_BYTES, 1 MiB
    assert "stalled-1" not in app.output and "big-1" not in app.output


def test_the_app_sees_the_address_the_proxy_saw_and_never_the_one_a_client_claims(front):
    # The app believes the proxy's address, 127.0.0.1; the clients connect from 127.0.0.2.
    app, proxy = front
    with from_client() as http:
        through = http.get(f"{proxy.url}/health/live", headers={"X-Forwarded-For": CLAIMED})
        kept = http.get(f"{proxy.url}/health/live", headers={"X-Request-ID": "client-chosen-id-1"})
        direct = http.get(f"{app.url}/health/live", headers={"X-Forwarded-For": CLAIMED})
    # The proxy gives each request an id when the client sent none, and the app keeps it.
    assert through.headers["x-request-id"] and kept.headers["x-request-id"] == "client-chosen-id-1"
    # Through the proxy: the address it saw the client connect from. Straight to the app: the connection's.
    for response in (through, kept, direct):
        assert logged(app, response.headers["x-request-id"])["client"] == CLIENT
    assert CLAIMED not in app.output
    # The proxy's log line carries the id the app logged: its own, or the client's.
    assert through.headers["x-request-id"] in "".join(proxy.lines)
    assert "client-chosen-id-1" in "".join(proxy.lines)


def test_without_the_setting_no_one_is_believed_not_even_a_client_on_loopback(default_project, migrated, service):
    # FORWARDED_ALLOW_IPS unset: the `uvicorn` command alone would believe 127.0.0.1 (its own default).
    app = service(default_project, migrated, start=False, args=PROTOCOL, SIGN_IN_ADDRESS_LIMIT="2", **FAST_HASHING)
    app.environ.pop("FORWARDED_ALLOW_IPS", None)
    app.start()
    statuses = []
    with httpx.Client(base_url=app.url, timeout=10) as http:
        for n in range(3):
            # Each attempt claims another address and names another account: only the address limit can refuse.
            claimed = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
            wrong = {"email": f"nobody{n}@example.com", "password": "not the password"}
            statuses.append(http.post("/auth/token", json=wrong, headers=claimed).status_code)
    app.stop()
    # Throttled as the one address it connects from, 127.0.0.1, and logged as it.
    assert statuses == [401, 401, 429], statuses
    assert {line["client"] for line in access_lines(app.output)} == {"127.0.0.1"}
    assert "203.0.113." not in app.output


def check_seconds(config: str) -> float:
    """The longest a replica whose /health turned 503 is still sent requests: a check just passed, then `fall`
    failed ones, the first after `inter`, the next `fastinter` apart, each taking up to `timeout check`."""
    server = re.search(r"^\s*default-server (.*)$", config, re.M)[1].split()
    option = {server[n]: server[n + 1] for n in range(len(server) - 1)}
    inter, fastinter = seconds(option["inter"]), seconds(option["fastinter"])
    timeout = seconds(re.search(r"^\s*timeout check (\S+)$", config, re.M)[1])
    return inter + (int(option["fall"]) - 1) * fastinter + timeout


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s)", value).groups()
    return int(number) / (1000 if unit == "ms" else 1)


def test_the_shipped_config_is_valid_and_compose_runs_it_in_front_of_three_draining_replicas(default_project):
    checked = subprocess.run([HAPROXY, "-c", "-f", str(default_project.path / CONFIG)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = (default_project.path / CONFIG).read_text()
    services = yaml.safe_load((default_project.path / "docker-compose.yml").read_text())["services"]
    proxy, app = services["proxy"], services["app-edge"]
    assert proxy["profiles"] == app["profiles"] == ["edge"] and "edge" in services["pgbouncer"]["profiles"]
    assert proxy["image"].startswith("haproxy:2.6")  # the branch the tests above ran
    assert "./deploy/haproxy:/usr/local/etc/haproxy:ro" in proxy["volumes"]
    bind = re.search(r'^\s*bind "\$\{EDGE_BIND-:(\d+)\}" proto h1$', config, re.M)[1]
    assert proxy["ports"] == [f"127.0.0.1:{bind}:{bind}"]
    # The replicas the proxy finds through Docker's DNS: as many slots as replicas.
    template = re.search(r"^\s*server-template app 1-(\d+) app-edge:8000 ", config, re.M)
    assert int(template[1]) == app["deploy"]["replicas"] == 3
    # The replicas believe the proxy's fixed address and no other.
    assert app["environment"]["FORWARDED_ALLOW_IPS"] == proxy["networks"]["edge"]["ipv4_address"]
    assert "@pgbouncer:5432/" in app["environment"]["DATABASE_URL"]
    assert str(app["environment"]["STATEMENT_CACHE_SIZE"]) == "0"
    # The drain outlasts the proxy's marking a replica down; the grace period, the drain and the shutdown bound.
    drain = float(app["environment"]["DRAIN_SECONDS"])
    assert drain > check_seconds(config), (drain, check_seconds(config))
    assert float(app["stop_grace_period"].rstrip("s")) >= drain + float(services["app"]["stop_grace_period"][:-1])


def test_the_ingress_mirrors_the_shipped_config_and_the_rollout_never_drops_below_the_ready_pods(bake):
    from test_kubernetes import render  # kubectl kustomize of the base, as its tests do

    rendered = render(bake())
    config = (rendered.project.path / CONFIG).read_text()
    ingress = rendered.get("Ingress", "web")
    notes = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "haproxy"
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"]["name"] == rendered.get("Service", "web")["metadata"]["name"]
    assert notes["haproxy.org/check-http"] == "/health" and notes["haproxy.org/check"] == "true"
    snippet = notes["haproxy.org/backend-config-snippet"].splitlines()
    for line in ("retries 1", "retry-on conn-failure empty-response", "option redispatch"):
        assert line in snippet and re.search(rf"^\s*{line}$", config, re.M), line
    assert "http-request disable-l7-retry unless METH_GET || METH_OPTIONS" in snippet
    assert "http-request del-header X-Forwarded-For" in snippet
    # The pod's preStop sleep (while the controller drops it from the endpoints; its /health is still 200) is no
    # shorter than the checks take to mark a dead pod down: the margin DRAIN_SECONDS gives in compose.
    interval = seconds(notes["haproxy.org/check-interval"])
    fall = int(re.search(r"\bfall (\d+)", notes["haproxy.org/backend-config-snippet"])[1])
    fastinter = seconds(re.search(r"\bfastinter (\S+)", notes["haproxy.org/backend-config-snippet"])[1])
    marked_down = interval + (fall - 1) * fastinter + seconds(notes["haproxy.org/timeout-check"])
    web = rendered.container("Deployment", "web")
    assert web["lifecycle"]["preStop"]["sleep"]["seconds"] > marked_down
    # A new pod is ready before an old one goes.
    assert rendered.get("Deployment", "web")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert rendered.env(web)["FORWARDED_ALLOW_IPS"]  # the controller's pods believed, or every client is one
