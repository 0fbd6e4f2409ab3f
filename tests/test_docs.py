"""The running service documents itself: a valid OpenAPI 3.1 document with each operation's security, and a /docs
page a browser renders offline and signs in from."""

import contextlib
import itertools
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import regress
from conftest import needs
from openapi_spec_validator import validate
from websockets.sync.client import connect

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
        "/users/me": ["delete", "get", "patch"],
        "/users/{id}": ["delete", "get", "patch"],
        "/auth/token": ["delete", "post"],
        "/auth/verify": ["post"],
        "/auth/verify/resend": ["post"],
        "/auth/password-reset": ["post"],
        "/auth/password-reset/complete": ["post"],
        "/auth/email-change": ["post"],
        "/auth/email-change/complete": ["post"],
        "/health": ["get"],
        "/health/live": ["get"],
    }
    # The bearer scheme, and every operation's own requirement: none, a token, or an admin's token.
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    security = {
        f"{method.upper()} {path}": operation["security"]
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    assert {name for name, needs in security.items() if needs == []} == {
        "POST /users",
        "POST /auth/token",
        "POST /auth/verify",
        "POST /auth/verify/resend",
        "POST /auth/password-reset",
        "POST /auth/password-reset/complete",
        "POST /auth/email-change/complete",
        "GET /health",
        "GET /health/live",
    }
    assert {name for name, needs in security.items() if needs == [{"bearer": ["admin"]}]} == {
        "GET /users",
        "GET /users/{id}",
        "PATCH /users/{id}",
        "DELETE /users/{id}",
    }
    schemas = document["components"]["schemas"]
    assert schemas["NewUser"]["required"] == ["email", "name", "password"]
    password = schemas["NewUser"]["properties"]["password"]
    assert (password["type"], password["minLength"], password["maxLength"]) == ("string", 8, 256)
    assert schemas["NewUser"]["additionalProperties"] is False
    assert schemas["NewUser"]["properties"]["email"]["maxLength"] == 254
    assert set(schemas["User"]["properties"]) == {"id", "email", "name", "is_active", "created_at"}
    assert set(schemas["Account"]["properties"]) == set(schemas["User"]["properties"]) | {"is_verified"}
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
def test_a_headless_browser_sees_the_users_routes_on_docs(running, default_project, tmp_path):
    result = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", f"{running.url}/docs"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    for text in ("/users", "/users/{id}", "/users/me", "/auth/token", "NewUser", "POST", "PATCH", "DELETE"):
        assert text in dom, text
    # The project's name, as it was given, heads the page; each operation's heading is its short summary,
    # sign-in before sign-out; the rest of its docstring is its description, with `code` as code.
    name = default_project.answers["project_name"]
    assert f"<title>{name}" in dom and f"<h1>{name}</h1>" in dom
    headings = re.findall(r'<h1 class="op-title">([^<]*)</h1>', dom)
    assert headings[headings.index("Sign in") + 1] == "Sign out" and "Sign up" in headings, headings
    assert all(len(heading) <= 60 for heading in headings), headings
    assert "as <code>after</code> for the next page" in dom
    # Each answer's example is its success status's: a 201 a user, a 204 no body.
    cards = dict(re.findall(r'id="(op-\d+)-response">.*?<span class="status-pill">(\d+)</span>', dom, re.DOTALL))
    statuses = [cards[op] for op in re.findall(r'<section class="operation" id="(op-\d+)"', dom)]
    signing_in = headings.index("Sign in")  # a token (200), then signing out (204)
    assert statuses[signing_in : signing_in + 2] == ["200", "204"] and {"201", "202"} <= set(statuses), statuses
    # The page came from the service alone: nothing it loads lives elsewhere.
    assert 'src="http' not in dom and 'href="http' not in dom


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator["DevTools"]:
    """Headless Chromium, driven over its DevTools protocol; stopped when the block ends."""
    flags = [flag for flag in CHROMIUM_FLAGS if not flag.startswith("--virtual-time")]
    process = subprocess.Popen(
        [CHROMIUM, *flags, "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline and process.poll() is None, "Chromium did not start"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        page = next(
            t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json() if t["type"] == "page"
        )
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            yield DevTools(socket)
    finally:
        process.terminate()
        process.wait(timeout=20)


class DevTools:
    """One page of the browser: open a URL, run JavaScript in it."""

    def __init__(self, socket) -> None:
        self.socket, self.ids = socket, itertools.count(1)

    def call(self, method: str, **params) -> dict:
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while (message := json.loads(self.socket.recv(timeout=30))).get("id") != number:
            pass  # an event, not our answer
        assert "error" not in message, message
        return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while self.evaluate("document.readyState") != "complete" or self.evaluate("location.href") != url:
            assert time.monotonic() < deadline, "the page did not load"
            time.sleep(0.05)


# Clicks a Test Request button of /docs, with a body if given, and waits for its answer: "status body".
TEST_REQUEST = """
async (method, path, body) => {
  const button = document.querySelector(`.test-request-btn[data-method="${method}"][data-path="${path}"]`);
  const card = document.getElementById(button.dataset.target);
  const label = card.querySelector('.code-card-label');
  label.textContent = 'waiting';
  if (body) button.closest('.code-card').querySelector('.json-editor').value = JSON.stringify(body);
  button.click();
  for (let i = 0; i < 200 && label.textContent !== 'Response'; i++) await new Promise(r => setTimeout(r, 50));
  return card.querySelector('.status-pill').textContent + ' ' + card.querySelector('.response-body').textContent;
}
"""


@needs(CHROMIUM, "chromium")
def test_signing_in_on_docs_signs_in_its_later_test_requests(running, tmp_path):
    credentials = {"email": "docs-reader@example.com", "password": "a long enough password"}
    created = httpx.post(f"{running.url}/users", json={**credentials, "name": "Reader"}, timeout=30)
    assert created.status_code == 201, created.text
    with chromium(tmp_path / "profile") as browser:
        browser.open(f"{running.url}/docs")

        def test_request(method: str, path: str, body: dict | None = None) -> str:
            return browser.evaluate(f"({TEST_REQUEST})({json.dumps(method)}, {json.dumps(path)}, {json.dumps(body)})")

        before = test_request("GET", "/users/me")
        signed_in = test_request("POST", "/auth/token", credentials)
        me = test_request("GET", "/users/me")
        header = browser.evaluate("heavenGetHeaders().Authorization")
        signed_out = test_request("DELETE", "/auth/token")
        after = test_request("GET", "/users/me")
    assert before.startswith("401") and "missing_token" in before
    assert signed_in.startswith("200") and "access_token" in signed_in
    assert me.startswith("200") and credentials["email"] in me
    assert header.startswith("Bearer ")
    assert signed_out.startswith("204")
    assert after.startswith("401") and "missing_token" in after  # the page forgot the token


def test_each_request_is_logged_as_one_json_line_without_its_query(running):
    httpx.get(f"{running.url}/users", params={"limit": 3, "token": "s3cret-token"})
    running.stop()
    lines = [json.loads(line) for line in running.output.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("message") == "request" and line.get("route") == "/users"]
    assert requests, running.output
    assert requests[-1]["status"] == 401 and requests[-1]["path"] == "/users"
    # uvicorn's own access log (off in the Dockerfile) prints the query; ours never does.
    assert not any("s3cret-token" in json.dumps(line) for line in lines)
