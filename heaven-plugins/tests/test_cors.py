"""CORS over real HTTP: nothing without CORS_ORIGINS; listed origins get their headers, preflights their answer."""

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from heaven_plugins import logs
from heaven_plugins.cors import parse_origins
from heaven_plugins.web import public

APP = "https://app.example.com"
PREFLIGHT = {"Origin": APP, "Access-Control-Request-Method": "PATCH", "Access-Control-Request-Headers": "authorization"}


async def test_without_cors_origins_there_are_no_cors_headers(client):
    response = await client.get("/health", headers={"Origin": APP})
    assert not [name for name in response.headers if name.startswith("access-control-")]
    preflight = await client.options("/users/me", headers=PREFLIGHT)
    # Plain OPTIONS (web.py): the route's methods, and no CORS header a browser would act on.
    assert preflight.status_code == 204 and "access-control-allow-origin" not in preflight.headers


async def test_a_listed_origin_gets_its_preflight_answered_before_sign_in(migrated, serve):
    url = await serve(migrated, cors_origins=f"{APP}, https://admin.example.com")
    async with httpx.AsyncClient(base_url=url) as http:
        preflight = await http.options("/users/me", headers=PREFLIGHT)
        assert preflight.status_code == 204 and preflight.content == b""
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "PATCH" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert preflight.headers["vary"] == "Origin" and int(preflight.headers["access-control-max-age"]) > 0
        assert "access-control-allow-credentials" not in preflight.headers
        # Its id, like every answer's: the client's when sane, else a new one.
        assert preflight.headers["x-request-id"]
        sent = await http.options("/users/me", headers={**PREFLIGHT, "X-Request-ID": "trace-42"})
        assert sent.headers["x-request-id"] == "trace-42"
        bad = await http.options("/users/me", headers={**PREFLIGHT, "X-Request-ID": "no spaces <here>"})
        assert bad.headers["x-request-id"] not in ("", "no spaces <here>")

        # The request itself, answered 401 here, carries the headers a browser needs to show the page that 401.
        response = await http.get("/users/me", headers={"Origin": APP})
        assert response.status_code == 401
        assert response.headers["access-control-allow-origin"] == APP
        assert "WWW-Authenticate" in response.headers["access-control-expose-headers"]
        assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "null", "https://app.example.com.evil.com", "http://app.example.com"]
)
async def test_an_unlisted_origin_gets_no_cors_headers(migrated, serve, origin):
    async with httpx.AsyncClient(base_url=await serve(migrated, cors_origins=APP)) as http:
        response = await http.get("/health", headers={"Origin": origin})
        preflight = await http.options("/users/me", headers={**PREFLIGHT, "Origin": origin})
    for answer in (response, preflight):
        assert not [name for name in answer.headers if name.startswith("access-control-")], answer.headers
    assert preflight.status_code == 204  # plain OPTIONS, not a preflight's answer: the browser refuses the call


async def test_any_origin_is_star_and_never_with_credentials(migrated, serve):
    async with httpx.AsyncClient(base_url=await serve(migrated, cors_origins="*")) as http:
        preflight = await http.options("/users", headers={**PREFLIGHT, "Origin": "https://anywhere.example"})
        response = await http.get("/health", headers={"Origin": "https://anywhere.example"})
    for answer in (preflight, response):
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers


@pytest.mark.parametrize(
    "value", ["null", "app.example.com", "https://app.example.com/path", "ftp://x.example", "*, null"]
)
def test_a_value_that_is_not_an_origin_is_refused(value):
    # A project's settings turn this into a stop naming CORS_ORIGINS (the bake's test_settings.py).
    with pytest.raises(ValueError, match="origin"):
        parse_origins(value)


async def test_a_websocket_from_a_listed_origin_passes_through(new_app, serve, capsys):
    # A websocket's scope has no method: CORS must let it by, not fail on it.
    app = new_app(cors_origins=APP)

    async def echo(send, receive, req, ctx):
        await send(await receive())

    app.SOCKET("/echo", public(echo))
    url = (await serve(app=app)).replace("http://", "ws://", 1)
    async with connect(f"{url}/echo", origin=APP, open_timeout=5) as websocket:
        await websocket.send("hello")
        assert await websocket.recv() == "hello"
    # Where no websocket route is, a refusal, not a failure.
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{url}/health", origin=APP, open_timeout=5):
            pass
    assert 400 <= refused.value.response.status_code < 500
    assert logs.writer.flush()
    assert "Traceback" not in capsys.readouterr().err
