"""The running service documents itself: a valid OpenAPI 3.1 document, and a /docs page a browser renders offline."""

import json
import shutil
import subprocess
import sys

import httpx
import pytest
import regress
from conftest import needs
from openapi_spec_validator import validate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]


@pytest.fixture(scope="module")
def running(default_project, new_database):
    """The default bake, migrated and served; yields its URL and the Service."""
    from conftest import Service

    url = new_database()
    migrated = default_project.run(sys.executable, "-m", f"{default_project.package}.migrate", DATABASE_URL=url)
    assert migrated.returncode == 0, migrated.stderr
    svc = Service(default_project, url).start()
    yield svc
    svc.stop()


def test_the_openapi_document_is_valid_and_carries_the_structs(running):
    response = httpx.get(f"{running.url}/docs/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)  # OpenAPI 3.1, JSON Schema 2020-12 inside
    assert {path: sorted(methods) for path, methods in document["paths"].items()} == {
        "/users": ["get", "post"],
        "/users/{id}": ["delete", "get", "patch"],
        "/health": ["get"],
        "/health/live": ["get"],
    }
    schemas = document["components"]["schemas"]
    assert schemas["NewUser"]["required"] == ["email", "name"]
    assert schemas["NewUser"]["additionalProperties"] is False
    assert schemas["NewUser"]["properties"]["email"]["maxLength"] == 254
    assert set(schemas["User"]["properties"]) == {"id", "email", "name", "is_active", "created_at"}
    post = document["paths"]["/users"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/NewUser"}
    assert post["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/User"}
    assert post["responses"]["409"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert set(post["responses"]) >= {"400", "413", "415", "422"}
    (user_id,) = document["paths"]["/users/{id}"]["get"]["parameters"]
    assert user_id["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    # Each pattern is ECMA-262, as JSON Schema reads it (the baked suite checks that Python's re agrees).
    email, name = (regress.Regex(schemas["NewUser"]["properties"][f]["pattern"], "u") for f in ("email", "name"))
    assert email.find("ada@example.com") and email.find(" ada@example.com\n")  # spaces around are trimmed
    assert not email.find("ada\ufeff@example.com") and not email.find("ada@example.com\nbob@example.com")
    assert name.find("Ada") and not name.find("Ada\n")


@needs(CHROMIUM, "chromium")
def test_a_headless_browser_sees_the_users_routes_on_docs(running, tmp_path):
    result = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", f"{running.url}/docs"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    for text in ("/users", "/users/{id}", "NewUser", "POST", "PATCH", "DELETE"):
        assert text in dom, text
    # The page came from the service alone: nothing it loads lives elsewhere.
    assert 'src="http' not in dom and 'href="http' not in dom


def test_each_request_is_logged_as_one_json_line_without_its_query(running):
    httpx.get(f"{running.url}/users", params={"limit": 3, "token": "s3cret-token"})
    running.stop()
    lines = [json.loads(line) for line in running.output.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("message") == "request" and line.get("route") == "/users"]
    assert requests, running.output
    assert requests[-1]["status"] == 200 and requests[-1]["path"] == "/users"
    # uvicorn's own access log (off in the Dockerfile) prints the query; ours never does.
    assert not any("s3cret-token" in json.dumps(line) for line in lines)
