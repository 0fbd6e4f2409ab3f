"""API docs: the OpenAPI 3.1 document built from the routes and the Structs their handlers read and answer,
and the Docs plugin serving it at /docs/openapi.json and as a page for people at /docs (docs_page.py)."""

import functools
import json
import re
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import msgspec
from heaven.constants import DEFAULT
from msgspec import UNSET, Struct, UnsetType

from .docs_page import page
from .fields import Id

# Where the page and the document it shows are served.
ROUTE = "/docs"
JSON_ROUTE = f"{ROUTE}/openapi.json"
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"}
_REF = "#/components/schemas/{name}"
_ID_SCHEMA = msgspec.json.schema(Id)


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


def read_project(path: Path) -> dict[str, str]:
    """A project's name, description and distribution (whose installed version the document gives), from
    the JSON file at `path`."""
    return json.loads(path.read_text(encoding="utf-8"))


def openapi(app, project: dict[str, str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route `app` documents (Heaven's discover()), titled by `project`."""
    entries = [e for e in app.discover(DEFAULT) if e["method"] in METHODS and e["documented"]]
    operations = [getattr(e["handler"], "openapi", None) or Operation() for e in entries]
    # Error first: the responses every operation gets (DEFAULT_RESPONSES) need its schema too.
    types = [Error, *(t for op in operations for t in (op.body, op.query, *op.responses.values()) if t is not None)]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = {id(t): schema for t, schema in zip(types, schemas, strict=True)}
    for name in {op.query.__name__ for op in operations if op.query is not None}:
        components.pop(name, None)  # described as parameters, not as a schema of its own
    paths: dict[str, dict] = {}
    for entry, op in sorted(zip(entries, operations, strict=True), key=_reading_order):
        path, parameters = _path(entry["route"])
        if op.query is not None:
            parameters += _query_parameters(op.query)
        summary, description = _summary(entry["docstring"] or "")
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
        if description:
            operation["description"] = description
        if parameters:
            operation["parameters"] = parameters
        if op.body is not None:
            body = {"application/json": {"schema": schema_of[id(op.body)]}}
            operation["requestBody"] = {"required": True, "content": body}
        paths.setdefault(path, {})[entry["method"].lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": project["name"], "description": project["description"], "version": _version(project)},
        "paths": paths,
        "components": {"schemas": components, **({"securitySchemes": BEARER} if app.guarded else {})},
    }


# A docstring's summary ends at its first "." ":" or ";" followed by a space (outside `code`), or
# at the end of its first paragraph: "Sign up: 201 with the user..." is "Sign up", then the rest.
_SUMMARY_END = re.compile(r"`[^`]*`|([.:;])(?:\s|$)")
# Within a path, the methods in the order a reader meets them: list or read, create, change, delete.
_METHOD_ORDER = {"GET": 0, "HEAD": 1, "POST": 2, "PUT": 3, "PATCH": 4, "DELETE": 5, "OPTIONS": 6, "TRACE": 7}


def _summary(docstring: str) -> tuple[str, str]:
    """A handler's docstring as a short summary and the rest, the paragraphs of the rest reflowed
    (a docstring's line breaks are not the reader's)."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", docstring.strip()) if p.strip()]
    if not paragraphs:
        return "", ""
    first = paragraphs[0]
    end = next((match for match in _SUMMARY_END.finditer(first) if match.group(1)), None)
    if end is None:
        summary, rest = first, ""
    else:
        summary, rest = first[: end.start()], first[end.end() :].strip()
    rest = rest[:1].upper() + rest[1:]
    return summary, "\n\n".join(part for part in (rest, *paragraphs[1:]) if part)


def _reading_order(pair: tuple[dict, Operation]) -> tuple:
    # By group (the tag, which the page groups by too), then path, then method: sign-in (POST /auth/token)
    # before sign-out (DELETE), a list before a create, a read before a change before a delete.
    entry = pair[0]
    return entry["group"], entry["route"], _METHOD_ORDER.get(entry["method"], len(_METHOD_ORDER))


class Docs:
    """The plugin: /docs, a page for people, and /docs/openapi.json, the document it shows, of `project`
    (read_project)."""

    def __init__(self, project: dict[str, str]) -> None:
        self.project = project

    def install(self, app) -> None:
        """Register /docs and /docs/openapi.json on `app`, left out of the document they serve."""
        project = self.project

        # Built on the first request, once every plugin has registered its routes.
        @functools.cache
        def rendered() -> tuple[bytes, str]:
            document = openapi(app, project)
            return msgspec.json.encode(document), page(document, JSON_ROUTE)

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


def _version(project: dict[str, str]) -> str:
    try:
        return version(project["distribution"])
    except PackageNotFoundError:  # run from the source tree, not installed
        return "0.0.0"
