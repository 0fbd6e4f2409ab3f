"""This project's app (app.py): the plugins it installs as its settings say, its database on each request's
context as ctx.{{ cookiecutter.context_name }}, and the methods of its routes. How the App and each plugin
behave is heaven-plugins' to test."""

import httpx
from heaven.constants import DEFAULT
from heaven_plugins.postgres import postgres_of
from heaven_plugins.signin import AUTH
from heaven_plugins.web import public, send

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.resources import DB
from {{ cookiecutter.package_name }}.settings import Settings

ROUTES = {
    *[("GET", "/health"), ("GET", "/health/live"), ("GET", "/docs"), ("GET", "/docs/openapi.json")],
    *[("POST", "/auth/token"), ("DELETE", "/auth/token"), ("GET", "/users"), ("POST", "/users")],
    *[("GET", "/users/me"), ("PATCH", "/users/me"), ("DELETE", "/users/me")],
    *[("GET", "/users/:id"), ("PATCH", "/users/:id"), ("DELETE", "/users/:id")],
}


def routes(app) -> set[tuple[str, str]]:
    return {(entry["method"], entry["route"]) for entry in app.discover(DEFAULT) if entry["handler"] is not None}


def test_the_app_installs_its_plugins_and_routes():
    app = create_app(Settings())  # builds the routes; connects to nothing
    assert postgres_of(app).name == DB.name == "{{ cookiecutter.context_name }}"
    assert app.peek(AUTH.name) is not None
    assert routes(app) >= {*ROUTES, ("GET", "/metrics")}
    assert ("GET", "/metrics") not in routes(create_app(Settings(metrics=False)))


async def test_each_request_has_the_database_on_its_context(new_app, serve):
    app = new_app()
    assert not app.subdomains[DEFAULT].befores  # the plugin provides itself without a hook

    @public
    async def handler(req, res, ctx):
        send(res, {"same": ctx.peek(DB) is ctx.{{ cookiecutter.context_name }} is app.peek(DB.name)})

    app.GET("/probe", handler)
    async with httpx.AsyncClient(base_url=await serve(app=app)) as client:
        response = await client.get("/probe")
    assert response.json() == {"same": True}


async def test_options_lists_the_methods_of_each_users_route(client):
    allowed = {
        "/users": "GET, HEAD, OPTIONS, POST",
        "/users/me": "DELETE, GET, HEAD, OPTIONS, PATCH",
        "/users/1": "DELETE, GET, HEAD, OPTIONS, PATCH",
    }
    for path, allow in allowed.items():
        response = await client.options(path)
        assert response.status_code == 204 and response.headers["allow"] == allow, path
    refused = await client.put("/users/me")
    assert refused.status_code == 405 and refused.headers["allow"] == allowed["/users/me"]


async def test_cors_origins_reach_the_cors_plugin(migrated, serve):
    origin = "https://app.example.com"
    async with httpx.AsyncClient(base_url=await serve(migrated, cors_origins=origin)) as http:
        response = await http.get("/health", headers={"Origin": origin})
    assert response.headers["access-control-allow-origin"] == origin
