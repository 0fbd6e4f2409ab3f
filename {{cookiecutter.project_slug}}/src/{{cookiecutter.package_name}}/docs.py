"""API docs: /docs/openapi.json (OpenAPI 3.1) built from the routes and the Structs their handlers
read and answer, and /docs, Heaven's self-contained reference page showing that same document."""

import functools
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from heaven.constants import DEFAULT
from heaven.docs import get_docs_html
from msgspec import UNSET, Struct, UnsetType

from .resources import Id

TITLE = "{{ cookiecutter.project_slug }}"
ROUTE = "/docs"
JSON_ROUTE = f"{ROUTE}/openapi.json"
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"}
_REF = "#/components/schemas/{name}"
_ID_SCHEMA = msgspec.json.schema(Id)


# The page's "Test Request" buttons send the headers of its "Headers" panel (kept in the tab's
# sessionStorage). Signing in there with POST /auth/token puts the token in that panel, so every
# later Test Request is signed in; DELETE /auth/token takes it out.
SIGN_IN_SCRIPT = """
(function () {
  var send = window.fetch;
  window.fetch = function (path, options) {
    var method = ((options && options.method) || 'GET').toUpperCase();
    return send.apply(this, arguments).then(function (response) {
      if (path !== '/auth/token' || !response.ok) return response;
      var headers = heavenGetHeaders();
      if (method === 'DELETE') { delete headers['Authorization']; heavenSetHeaders(headers); return response; }
      return response.clone().json().then(function (token) {
        headers['Authorization'] = 'Bearer ' + token.access_token;
        heavenSetHeaders(headers);
        return response;
      });
    });
  };
})();
"""


class Error(Struct):
    """Every error answer: a code to branch on, a sentence to show, and the field at fault if one is."""

    error: str
    detail: str
    field: str | UnsetType = UNSET


class Operation(Struct, frozen=True):
    body: Any = None
    query: Any = None
    responses: dict[int, Any] = {}


# Any handler may fail (500), and any that reads the database may find it away (503).
DEFAULT_RESPONSES = {500: Error, 503: Error}
# Any handler that reads a body with web.read may find it not JSON (400), too big (413) or not sent as JSON (415).
BODY_RESPONSES = {400: Error, 413: Error, 415: Error}
# On an app with sign-in (App.guard, auth.py), a handler marked `public` needs no token, one
# marked `admin` an admin's (a role, which OpenAPI 3.1 lets a security requirement name), and
# every other one a user's.
BEARER = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from POST /auth/token, sent as `Authorization: Bearer <token>`.",
    }
}


def documented(*, body: Any = None, query: Any = None, responses: dict[int, Any]):
    """Record what a handler reads and answers, for the OpenAPI document:

        @documented(body=NewUser, responses={201: User, 409: Error, 422: Error})

    `body` is the request body's type, `query` a Struct whose fields are the query parameters,
    and `responses` maps each status to the type of its body (None: no body).
    """
    operation = Operation(body, query, responses)

    def document(handler):
        handler.openapi = operation
        return handler

    return document


def openapi(app) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route `app` documents (Heaven's discover())."""
    entries = [e for e in app.discover(DEFAULT) if e["method"] in METHODS and e["documented"]]
    operations = [getattr(e["handler"], "openapi", None) or Operation() for e in entries]
    # Error first: the responses every operation gets (DEFAULT_RESPONSES) need its schema too.
    types = [Error, *(t for op in operations for t in (op.body, op.query, *op.responses.values()) if t is not None)]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = {id(t): schema for t, schema in zip(types, schemas, strict=True)}
    for name in {op.query.__name__ for op in operations if op.query is not None}:
        components.pop(name, None)  # described as parameters, not as a schema of its own
    paths: dict[str, dict] = {}
    for entry, op in zip(entries, operations, strict=True):
        path, parameters = _path(entry["route"])
        if op.query is not None:
            parameters += _query_parameters(op.query)
        summary, _, description = (entry["docstring"] or "").strip().partition("\n")
        responses = {**DEFAULT_RESPONSES, **_body_responses(op), **op.responses}
        security = _security(entry["handler"]) if app.guarded else None
        if security:  # a token is needed: 401 without one, 403 without the role
            responses[401] = Error
            if security[0]["bearer"]:
                responses[403] = Error
        operation = {
            "operationId": entry["handler_name"],
            "tags": [entry["group"]],
            "summary": summary,
            "responses": {
                str(status): _response(status, None if kind is None else schema_of[id(kind)])
                for status, kind in sorted(responses.items())
            },
        }
        if security is not None:
            operation["security"] = security
        if description.strip():
            operation["description"] = description.strip()
        if parameters:
            operation["parameters"] = parameters
        if op.body is not None:
            body = {"application/json": {"schema": schema_of[id(op.body)]}}
            operation["requestBody"] = {"required": True, "content": body}
        paths.setdefault(path, {})[entry["method"].lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": _version()},
        "paths": paths,
        "components": {"schemas": components, **({"securitySchemes": BEARER} if app.guarded else {})},
    }


def page(document: dict[str, Any]) -> str:
    """Heaven's reference page (inline CSS and JS, no CDN) for `document`."""
    operations = [
        {
            "method": method.upper(),
            "path": path,
            "route": path,
            "subdomain": DEFAULT,
            "group": operation["tags"][0],
            "docstring": operation.get("description", ""),
            "has_schema": True,
            "operation": operation,
        }
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    info = document["info"]
    html = get_docs_html(info["title"], info["version"], None, JSON_ROUTE, operations, document["components"], [])
    return html.replace("</body>", f"<script>{SIGN_IN_SCRIPT}</script></body>", 1)


def install(app) -> None:
    """Register /docs and /docs/openapi.json on `app`, left out of the document they serve."""

    # Built on the first request, once every plugin has registered its routes.
    @functools.cache
    def rendered() -> tuple[bytes, str]:
        document = openapi(app)
        return msgspec.json.encode(document), page(document)

    async def openapi_json(req, res, ctx):
        res.status = 200
        res.headers = "Content-Type", "application/json"
        res.body = rendered()[0]

    async def reference(req, res, ctx):
        res.status = 200
        res.headers = "Content-Type", "text/html; charset=utf-8"
        res.body = rendered()[1]

    # Read by anyone (the sign-in guard lets a handler marked `public` through without a token).
    openapi_json.public = reference.public = True
    app.GET(JSON_ROUTE, openapi_json, docs=False)
    app.GET(ROUTE, reference, docs=False)


def _security(handler) -> list[dict]:
    if getattr(handler, "public", False):
        return []
    return [{"bearer": ["admin"] if getattr(handler, "admin", False) else []}]


def _path(route: str) -> tuple[str, list[dict]]:
    # Heaven's `/users/:id` is OpenAPI's `/users/{id}` with a path parameter: an id (resources.path_id
    # reads it) when it is named `id` or `<thing>_id`, an integer for Heaven's `:n:int`, else a string.
    segments, parameters = [], []
    for segment in route.split("/"):
        if segment.startswith(":"):
            name, _, kind = segment[1:].partition(":")
            if not kind and (name == "id" or name.endswith("_id")):
                schema = _ID_SCHEMA
            else:
                schema = {"type": "integer"} if kind == "int" else {"type": "string"}
            parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
            segment = "{" + name + "}"
        segments.append(segment)
    return "/".join(segments), parameters


def _body_responses(operation: Operation) -> dict[int, Any]:
    return BODY_RESPONSES if operation.body is not None else {}


def _query_parameters(struct: type[Struct]) -> list[dict]:
    _, components = msgspec.json.schema_components([struct], ref_template=_REF)
    schema = components[struct.__name__]
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": field}
        for name, field in schema["properties"].items()
    ]


def _response(status: int, schema: dict | None) -> dict:
    response: dict[str, Any] = {"description": HTTPStatus(status).phrase}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    return response


def _version() -> str:
    try:
        return version(TITLE)
    except PackageNotFoundError:  # run from the source tree, not installed
        return "0.0.0"
