"""/docs/openapi.json describes every route with the Structs its handler reads and answers; /docs shows it."""

import msgspec

from example import PROJECT, NewUser, Settings, User, create_app
from heaven_plugins.docs import BEARER, METHODS, openapi


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
    assert document["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer", "description": BEARER["bearer"]["description"]}
    }
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
        ("GET", "/users"): admin,
        ("GET", "/users/{id}"): admin,
    }
    for (method, path), security in needs.items():
        responses = document["paths"][path][method.lower()]["responses"]
        if security:
            assert "401" in responses and ("403" in responses or security != admin), (method, path)


async def test_bodies_and_answers_are_the_structs_schemas(client):
    document = (await client.get("/docs/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for struct in (User, NewUser):
        assert schemas[struct.__name__] == schema_of(struct)

    def body(path, method):
        return document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]

    def answer(path, method, status):
        return document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]

    assert body("/users", "post") == {"$ref": "#/components/schemas/NewUser"}
    assert answer("/users", "post", "201") == {"$ref": "#/components/schemas/User"}
    assert answer("/users", "get", "200") == {"type": "array", "items": {"$ref": "#/components/schemas/User"}}
    assert answer("/users/{id}", "get", "404") == {"$ref": "#/components/schemas/Error"}
    assert answer("/users", "post", "415") == {"$ref": "#/components/schemas/Error"}  # added for any body
    assert "content" not in document["paths"]["/auth/token"]["delete"]["responses"]["204"]
    parameters = {p["name"]: p for p in document["paths"]["/users"]["get"]["parameters"]}
    assert parameters["limit"]["schema"]["maximum"] == 100
    assert parameters["limit"]["in"] == "query"


def test_every_handler_says_what_it_answers():
    # A route added without @documented would be listed with nothing but 500 and 503.
    document = openapi(create_app(Settings()), PROJECT)  # builds the routes; connects to nothing
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert set(operation["responses"]) - {"500", "503"}, f"{method.upper()} {path} is not @documented"


async def test_the_page_needs_nothing_from_elsewhere(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "/users" in page and "NewUser" in page
    assert "Bearer " in page  # signing in on the page signs in its later requests (docs.SIGN_IN_SCRIPT)
    assert 'src="http' not in page and 'href="http' not in page


def test_a_docstring_is_a_short_summary_and_a_description_in_reading_order():
    app = create_app(Settings())  # builds the routes; connects to nothing

    async def remove_thing(req, res, ctx):
        """Remove a thing: 204, or 404 if there is none. Its `id` is
        never used again.

        Only its owner may."""

    async def list_things(req, res, ctx):
        """Things, a page at a time."""

    app.DELETE("/things/:id", remove_thing)
    app.GET("/things", list_things)
    document = openapi(app, PROJECT)
    assert document["info"]["title"] == PROJECT["name"] != PROJECT["distribution"]
    remove = document["paths"]["/things/{id}"]["delete"]
    assert remove["summary"] == "Remove a thing"
    assert remove["description"] == "204, or 404 if there is none. Its `id` is never used again.\n\nOnly its owner may."
    assert "description" not in document["paths"]["/things"]["get"]
    # By group, then path, then list or read, create, change, delete: sign-in before sign-out.
    order = [f"{method.upper()} {path}" for path, methods in document["paths"].items() for method in methods]
    assert order.index("POST /auth/token") < order.index("DELETE /auth/token") < order.index("GET /users")
    assert order.index("GET /things") < order.index("DELETE /things/{id}")
