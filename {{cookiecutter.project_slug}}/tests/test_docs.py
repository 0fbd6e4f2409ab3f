"""This project's routes in /docs/openapi.json: each one, the token it needs, and the Structs its handler reads
and answers (how the document is built is heaven-plugins' to test)."""

import msgspec
from heaven_plugins.docs import METHODS, openapi

from {{ cookiecutter.package_name }}.app import PROJECT, create_app
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.users import NewUser, User, UserPatch


def schema_of(struct) -> dict:
    _, components = msgspec.json.schema_components([struct], ref_template="#/components/schemas/{name}")
    return components[struct.__name__]


async def test_every_route_is_in_the_document(client):
    response = await client.get("/docs/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.1")
    operations = {
        (method.upper(), operation["operationId"])
        for methods in document["paths"].values()
        for method, operation in methods.items()
    }
    # Whatever routes the project has: every handler the router has wired, but those registered docs=False.
    app = create_app(Settings())  # builds the routes; connects to nothing
    wired = {(e["method"], e["handler_name"]) for e in app.discover() if e["handler"] is not None and e["documented"]}
    assert operations == {(method, name) for method, name in wired if method in METHODS}
    assert {
        ("GET", "list_users"),
        ("POST", "create_user"),
        ("GET", "get_account"),
        ("POST", "create_token"),
        ("DELETE", "delete_token"),
        ("GET", "check_health"),
    } <= operations
    assert not any(path.startswith("/docs") for path in document["paths"])


async def test_each_operation_says_which_token_it_needs(client):
    document = (await client.get("/docs/openapi.json")).json()
    needs = {
        (method.upper(), path): operation["security"]
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    public, user, admin = [], [{"bearer": []}], [{"bearer": ["admin"]}]
    # Every operation says which; those of the users and of sign-in say these.
    assert all(security in (public, user, admin) for security in needs.values())
    assert {key: needs[key] for key in needs if key[1].startswith(("/users", "/auth", "/health"))} == {
        ("POST", "/users"): public,
        ("POST", "/auth/token"): public,
        ("POST", "/auth/verify"): public,
        ("POST", "/auth/verify/resend"): public,
        ("POST", "/auth/password-reset"): public,
        ("POST", "/auth/password-reset/complete"): public,
        ("POST", "/auth/email-change/complete"): public,
        ("GET", "/health"): public,
        ("GET", "/health/live"): public,
        ("DELETE", "/auth/token"): user,
        ("POST", "/auth/email-change"): user,
        ("GET", "/users/me"): user,
        ("PATCH", "/users/me"): user,
        ("DELETE", "/users/me"): user,
        ("GET", "/users"): admin,
        ("GET", "/users/{id}"): admin,
        ("PATCH", "/users/{id}"): admin,
        ("DELETE", "/users/{id}"): admin,
    }
    for (method, path), security in needs.items():
        responses = document["paths"][path][method.lower()]["responses"]
        if security:
            assert "401" in responses and ("403" in responses or security != admin), (method, path)


async def test_bodies_and_answers_are_the_structs_schemas(client):
    document = (await client.get("/docs/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for struct in (User, NewUser, UserPatch):
        assert schemas[struct.__name__] == schema_of(struct)

    def body(path, method):
        return document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]

    def answer(path, method, status):
        return document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]

    assert body("/users", "post") == {"$ref": "#/components/schemas/NewUser"}
    assert answer("/users", "post", "201") == {"$ref": "#/components/schemas/User"}
    assert answer("/users", "get", "200") == {"type": "array", "items": {"$ref": "#/components/schemas/User"}}
    assert body("/users/{id}", "patch") == {"$ref": "#/components/schemas/UserPatch"}
    assert answer("/users/{id}", "get", "404") == {"$ref": "#/components/schemas/Error"}
    assert answer("/users/{id}", "patch", "415") == {"$ref": "#/components/schemas/Error"}  # added for any body
    assert "content" not in document["paths"]["/users/{id}"]["delete"]["responses"]["204"]
    parameters = {p["name"]: p for p in document["paths"]["/users"]["get"]["parameters"]}
    assert parameters["limit"]["schema"]["maximum"] == 100
    assert parameters["limit"]["in"] == "query"


def test_every_handler_says_what_it_answers():
    # A route added without @documented would be listed with nothing but 500 and 503.
    document = openapi(create_app(Settings()), PROJECT)  # builds the routes; connects to nothing
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert set(operation["responses"]) - {"500", "503"}, f"{method.upper()} {path} is not @documented"
