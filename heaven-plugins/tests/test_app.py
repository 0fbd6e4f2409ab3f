"""The App as uvicorn runs it: refuses to start without its database, and says why in one line;
runs the hooks added to it, with the database on their context; answers JSON to what Heaven cannot read."""

import asyncio
import os
import subprocess
import sys
import time

import heaven
import httpx
import pytest
from heaven.constants import DEFAULT

from conftest import SOURCE
from example import DB
from heaven_plugins.app import App
from heaven_plugins.web import HTTPError, public, send


def test_uvicorn_exits_fast_when_postgres_is_unreachable(closed_port, tmp_path):
    environ = {
        **os.environ,
        "DATABASE_URL": f"postgresql://app:hunter2-secret@127.0.0.1:{closed_port}/appdb",
        "CONNECT_TIMEOUT": "3",
        "PYTHONPATH": SOURCE,
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "example:main", "--factory", "--port", "0"],
        env=environ,
        cwd=tmp_path,  # no .env there
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert time.monotonic() - started < 3 + 5
    assert f"cannot connect to Postgres at 127.0.0.1:{closed_port}/appdb" in output
    assert "hunter2" not in output


async def test_hooks_run_in_order_and_see_the_database(new_app, serve):
    app = new_app()
    seen = []

    def outermost(req, res, ctx):
        seen.append(("BEFORE /*", ctx.peek(DB) is app.peek(DB.name)))

    async def inner(req, res, ctx):
        seen.append(("BEFORE /probe/*", await ctx.peek(DB).fetchval("SELECT 6 * 7")))

    @public
    async def handler(req, res, ctx):
        seen.append(("handler", req.params["name"]))
        send(res, {"hello": req.params["name"]})

    def after(req, res, ctx):
        seen.append(("AFTER /*", res.status))
        res.header("X-Hooked", "yes")

    app.BEFORE("/*", outermost)
    app.BEFORE("/probe/*", inner)
    app.GET("/probe/:name", handler)
    app.AFTER("/*", after)
    async with httpx.AsyncClient(base_url=await serve(app=app)) as client:
        response = await client.get("/probe/ada")
        refused = await client.post("/users", json={})  # a route without hooks of its own
    assert response.status_code == 200, response.text
    assert response.json() == {"hello": "ada"}
    assert response.headers["X-Hooked"] == "yes"
    assert seen[:4] == [("BEFORE /*", True), ("BEFORE /probe/*", 42), ("handler", "ada"), ("AFTER /*", 200)]
    assert refused.status_code == 422 and refused.headers["X-Hooked"] == "yes"
    assert seen[4:] == [("BEFORE /*", True), ("AFTER /*", 422)]


async def test_without_hooks_the_context_still_has_the_database(new_app, serve):
    app = new_app()
    assert not app.subdomains[DEFAULT].befores  # the plugin provides itself without a hook

    @public
    async def handler(req, res, ctx):
        send(res, {"same": ctx.peek(DB) is ctx.db is app.peek(DB.name)})

    app.GET("/probe", handler)
    async with httpx.AsyncClient(base_url=await serve(app=app)) as client:
        response = await client.get("/probe")
    assert response.json() == {"same": True}


async def test_daemons_start_once_the_database_is_up(new_app, serve, conn):
    await conn.execute("INSERT INTO users (email, name) VALUES ('a@example.com', 'A'), ('b@example.com', 'B')")
    app = new_app()
    ran = asyncio.Event()
    seen = []

    async def count_users(app):
        seen.append(await app.peek(DB.name).fetchval("SELECT count(*) FROM users"))
        ran.set()  # and returns None: run once

    app.daemons = count_users
    await serve(app=app)
    await asyncio.wait_for(ran.wait(), 5)
    assert seen == [2]


async def test_an_exception_type_a_plugin_registers_is_answered_as_registered(new_app, serve):
    app = new_app()

    class Refused(Exception):
        pass

    class RefusedHarder(Refused):
        pass

    class Unknown(Exception):
        pass

    app.answer(Refused, lambda exc: HTTPError(418, "refused", f"refused: {exc}", headers=(("X-Why", "tea"),)))
    raised = {"/refused": Refused("no"), "/harder": RefusedHarder("never"), "/unknown": Unknown("what")}

    @public
    async def handler(req, res, ctx):
        raise raised[req.url]

    def hook(req, res, ctx):
        raise Refused("in a hook")

    for path in raised:
        app.GET(path, handler)
    app.BEFORE("/hooked", hook)
    app.GET("/hooked", handler)
    async with httpx.AsyncClient(base_url=await serve(app=app)) as client:
        answers = {path: await client.get(path) for path in [*raised, "/hooked"]}
    for path, detail in [("/refused", "no"), ("/harder", "never"), ("/hooked", "in a hook")]:
        assert answers[path].status_code == 418 and answers[path].headers["x-why"] == "tea", path
        assert answers[path].json() == {"error": "refused", "detail": f"refused: {detail}"}
    assert answers["/unknown"].status_code == 500
    assert answers["/unknown"].json()["error"] == "internal_error"


async def test_a_header_that_is_not_utf8_is_a_json_400(client):
    # HTTP lets a header carry any byte but controls; Heaven reads every header as UTF-8.
    for name in ("user-agent", "content-type"):
        body = {"email": "h@example.com", "name": "H", "password": "a good password"}
        response = await client.post("/users", json=body, headers={name: b"x\xff"})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "malformed_header"
    assert (await client.get("/health", headers={"x-note": "caf\u00e9".encode()})).status_code == 200


async def test_options_on_a_route_is_204_and_its_allow_lists_options(client):
    # RFC 9110: OPTIONS asks what a route takes, and what answers it is one of those methods.
    response = await client.options("/users")
    assert response.status_code == 204 and response.content == b"", response.text
    assert response.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    assert response.headers["x-request-id"]
    # A 405 lists it too; a path that is no route is still a 404.
    refused = await client.put("/users/me")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, OPTIONS"
    assert (await client.options("/nothing/here")).status_code == 404


GOOD = {"email": "n@example.com", "name": "N", "password": "long enough"}


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"email": "not-an-email"}, "email is not a valid email address"),
        ({"name": "N\n"}, "name must show something and hold no control character or line break"),
        ({"name": "\u200b"}, "name must show something and hold no control character or line break"),
        ({"password": "short"}, "password must be at least 8 characters"),
        ({"name": 5}, "name must be a string, not an integer"),
        ({"name": None}, "name is required"),  # None: left out
        ({"role": "admin"}, "role is not a field of this request"),
    ],
)
async def test_an_invalid_field_gets_a_short_sentence_naming_it(client, change, detail):
    body = {key: value for key, value in {**GOOD, **change}.items() if value is not None}
    response = await client.post("/users", json=body)
    assert response.status_code == 422, response.text
    assert response.json() == {"error": "invalid", "detail": detail, "field": next(iter(change))}


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"[]", 422, "the body must be an object, not an array"),
        (b"", 400, "the body is empty: send a JSON object"),
        (b'{"name": "N', 400, "the JSON ends too early: a bracket, brace or string is not closed"),
    ],
)
async def test_a_body_that_is_no_json_object_says_what_it_is(client, body, status, detail):
    response = await client.post("/users", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json() == {"error": "invalid" if status == 422 else "malformed_json", "detail": detail}


async def test_a_request_is_answered_as_heaven_would_answer_it():
    # The App answers an HTTP request itself (app.py, routes.py) rather than through Heaven's Router.__call__
    # and Routes.handle: what a handler and a hook see and send comes out as from Heaven, bar the request id.
    deferred = []

    def routes(app) -> None:
        async def echo(req, res, ctx):
            res.body = {"params": req.params, "queries": req.queries, "route": req.route, "seen": req.headers["x-seen"]}

        async def chunks():
            yield b"one,"
            yield b"two"

        def streamed(req, res, ctx):
            res.stream(chunks(), content_type="text/csv")

        async def after_answer(app):
            deferred.append(app)

        def later(req, res, ctx):
            res.defer(after_answer)
            res.status, res.body = 202, "text"

        def stop(req, res, ctx):
            res.abort("stopped here")

        for route, handler in [("/things/:id:int", echo), ("/hinted?n:int&on:bool", echo), ("/plain", echo)]:
            app.GET(route, handler)
        app.GET("/streamed", streamed)
        app.POST("/later", later)
        app.GET("/stopped", echo)
        app.BEFORE("/stopped", stop)

    ours, heavens = App(access_log=False), heaven.Router()
    ours.guard(lambda handler: None)  # every route public, as on an App without sign-in
    routes(ours)
    routes(heavens)
    requests = [
        ("GET", "/things/7", b""),
        ("HEAD", "/things/7", b""),
        ("GET", "/hinted", b"n=3&on=true&other=x"),
        ("GET", "/plain/", b""),
        ("GET", "/streamed", b""),
        ("POST", "/later", b""),
        ("GET", "/stopped", b""),
    ]
    for method, path, query in requests:
        answers = [await _asgi(app, method, path, query) for app in (ours, heavens)]
        assert answers[0] == answers[1], (method, path)
    assert deferred == [ours, heavens]


async def test_a_body_in_several_messages_is_read_whole_and_past_the_limit_is_a_413_once_all_is_read():
    # Read by the App itself (routes.py) as Heaven's Routes.buffer reads it.
    app = App(access_log=False, max_body_size=10)
    app.guard(lambda handler: None)

    async def echo(req, res, ctx):
        send(res, {"body": req.body.decode()})

    app.POST("/echo", echo)
    scope = {"type": "http", "method": "POST", "path": "/echo", "raw_path": b"/echo", "query_string": b""}
    scope["headers"] = [(b"host", b"127.0.0.1:8000")]
    cases = [
        ([b"abc", b"def", b""], 200, b'{"body":"abcdef"}'),
        ([b"0123456789"], 200, b'{"body":"0123456789"}'),
        ([b"0123456", b"789", b"x", b"yz"], 413, b'{"error":"payload_too_large","detail":"the body is over 10 bytes"}'),
        ([b"0123456789x"], 413, b'{"error":"payload_too_large","detail":"the body is over 10 bytes"}'),
    ]
    for parts, status, body in cases:
        last = len(parts) - 1
        messages = [{"type": "http.request", "body": part, "more_body": i < last} for i, part in enumerate(parts)]
        sent: list[dict] = []
        await app(dict(scope), _popping(messages), _appending(sent))
        assert (sent[0]["status"], sent[1]["body"]) == (status, body), parts
        assert messages == []  # every part read, even past the limit


def _popping(messages: list[dict]):
    async def receive():
        return messages.pop(0)

    return receive


def _appending(sent: list[dict]):
    async def send(message):
        sent.append(message)

    return send


async def _asgi(app, method: str, path: str, query: bytes) -> tuple:
    # One request as uvicorn makes it: the status, the headers but the request id, and the body sent.
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:8000"), (b"x-seen", b"a"), (b"x-seen", b"b")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start, *bodies = sent
    headers = [(name.lower(), value) for name, value in start["headers"] if name.lower() != b"x-request-id"]
    return start["status"], headers, b"".join(body.get("body", b"") for body in bodies)


async def test_two_host_headers_are_a_json_400(serve, migrated):
    # RFC 9112 3.2. Heaven reads the two as a list and fails on it (a 500, and a traceback in the log).
    url = httpx.URL(await serve(migrated))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b'"error":"malformed_header"' in answer and b"more than one Host header" in answer, answer
    assert b"x-request-id: " in answer.lower(), answer
