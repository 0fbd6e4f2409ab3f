"""What an operator reads of the baked service run the README's way: every line of its output JSON,
each request logged once with its id, none lost at SIGTERM."""

import collections
import json
import signal
import sys

import httpx
import pytest


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
        ("POST", "/users", b'{"email": "ada@example.com", "name": "Ada"}'),
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
    with httpx.Client(base_url=svc.url, timeout=10) as http:
        for i, (method, path, body) in enumerate(requests):
            response = http.request(method, path, content=body, headers={"x-request-id": f"once-{i}"})
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
