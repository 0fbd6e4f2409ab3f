"""What an operator reads of the baked service run the README's way: every line of its output JSON,
each request logged once with its id, none lost at SIGTERM; and under `uvicorn --workers 2`, with
the project's uvicorn-logging.json, every line JSON still and /metrics adding up both workers."""

import collections
import json
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import admin_headers
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def migrated_database(default_project, new_database):
    url = new_database()
    result = default_project.run(sys.executable, "-m", f"{default_project.package}.migrate", DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    return url


def test_every_line_is_json_and_each_request_is_logged_once(default_project, migrated_database, service, figures):
    svc = service(default_project, migrated_database)
    requests = [
        ("GET", "/users", None),
        ("POST", "/users", b'{"email": "ada@example.com", "name": "Ada", "password": "a long enough password"}'),
        ("POST", "/users", b"{oops"),
        ("POST", "/users", b'{"email": "nope", "name": "X"}'),
        ("GET", "/users/999999", None),
        ("GET", "/nowhere", None),
        ("PUT", "/users", None),
        ("POST", "/users", b"x" * 2_000_000),
        ("GET", "/health", None),
        ("GET", "/metrics", None),
    ]
    statuses = {}
    # Every request an admin's (user 1), so that each answer is the route's own, not sign-in's 401.
    with httpx.Client(
        base_url=svc.url, timeout=10, headers=admin_headers(default_project, migrated_database, svc.url)
    ) as http:
        for i, (method, path, body) in enumerate(requests):
            headers = {"x-request-id": f"once-{i}", "content-type": "application/json"}
            response = http.request(method, path, content=body, headers=headers)
            assert response.headers["x-request-id"] == f"once-{i}"
            statuses[f"once-{i}"] = response.status_code
        # The last requests just before the signal: their lines must be written before the process ends.
        for i in range(200):
            response = http.get("/users/1", headers={"x-request-id": f"last-{i}"})
            statuses[f"last-{i}"] = response.status_code
    output = svc.stop(signal.SIGTERM)

    lines = output.splitlines()
    parsed = every_line_json(lines)
    logged = collections.Counter(line["request_id"] for line in parsed if line["logger"].endswith(".access"))
    assert {rid: logged[rid] for rid in statuses} == dict.fromkeys(statuses, 1)
    access = {line["request_id"]: line for line in parsed if line["logger"].endswith(".access")}
    assert {rid: access[rid]["status"] for rid in statuses} == statuses
    assert sorted(set(statuses.values())) == [200, 201, 400, 404, 405, 413, 422]
    assert any(line["logger"] == "uvicorn.error" and "Started server process" in line["message"] for line in parsed)
    assert parsed[-1]["message"].startswith("Finished server process"), parsed[-1]
    figures(f"{len(lines)} lines, every one JSON; {len(statuses)} requests each logged once, 200 just before SIGTERM")


def every_line_json(lines: list[str]) -> list[dict]:
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


def test_metrics_add_up_across_workers(default_project, migrated_database, service, tmp_path, figures):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    workers_2 = ("--workers", "2", "--log-config", "uvicorn-logging.json")
    svc = service(default_project, migrated_database, args=workers_2, PROMETHEUS_MULTIPROC_DIR=str(shared))
    admin = admin_headers(default_project, migrated_database, svc.url)

    def get(i: int) -> str:
        # A connection of its own each: the kernel hands connections to whichever worker accepts first.
        response = httpx.get(f"{svc.url}/users?limit=1", headers=admin, timeout=10)
        assert response.status_code == 200
        return response.headers["x-request-id"].rpartition("-")[0]  # the prefix names the worker's process

    sent, workers = 0, set()
    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(8) as pool:
        while len(workers) < 2 and time.monotonic() < deadline:
            workers.update(pool.map(get, range(100)))
            sent += 100
    assert len(workers) == 2, "one worker answered every request"

    def total() -> float:
        text = httpx.get(f"{svc.url}/metrics", timeout=10).text
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
        return sum(s.value for s in samples if s.name == "http_requests_total" and s.labels["route"] == "/users")

    # Each worker writes its counts once a second; whichever worker is scraped reads both.
    seen = total()
    while seen != sent and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = total()
    assert seen == sent
    lines = svc.stop(signal.SIGTERM).splitlines()
    parsed = every_line_json(lines)
    assert any("Started parent process" in line["message"] for line in parsed)  # the supervisor's, JSON too
    figures(f"--workers 2: {sent} requests over both workers, /metrics counts {seen:.0f}; {len(lines)} lines, all JSON")
