"""This project's resources over real HTTP, as /users shows them: ids that are plain digits, bodies that must
be sent as JSON, emails stored normalized, its text fields refused naming the field, and each text field
checked as the document describes it. What the field types themselves accept is heaven-plugins' to test."""

import functools
import json
import typing
import unicodedata

import msgspec
import pytest
import regress
from heaven.constants import DEFAULT
from heaven_plugins.docs import openapi
from heaven_plugins.fields import MAX_ID, normal_email
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PASSWORD, sign_in
from {{ cookiecutter.package_name }}.app import PROJECT, create_app
from {{ cookiecutter.package_name }}.settings import Settings

PACKAGE = create_app.__module__.partition(".")[0]
APP = create_app(Settings())  # builds the routes; connects to nothing
DOCUMENT = openapi(APP, PROJECT)


def accepts(kind, text: str) -> bool:
    try:
        msgspec.convert(text, kind)
    except msgspec.ValidationError:
        return False
    return True


# --- ids in the path -----------------------------------------------------------------------------------------------


async def test_an_id_is_plain_ascii_digits_or_it_names_nothing(admin, conn):
    # Ids 3 and 581 exist, so that an id read any other way than as plain digits would find one of them
    # (the admin asking is id 1).
    await conn.execute(
        "INSERT INTO users (id, email, name) OVERRIDING SYSTEM VALUE VALUES (3, 'c@example.com', 'C'), "
        "(581, 'e@example.com', 'E')"
    )
    assert (await admin.get("/users/581")).status_code == 200
    assert (await admin.get("/users/3")).status_code == 200
    twisted = ["+581", "0581", "00581", "5_81", "%20581", "581%20", "%2B581", "%D9%A3", "%D9%A5%D9%A8%D9%A1"]
    twisted += ["%EF%BC%95%EF%BC%98%EF%BC%91", "581.0", "0x245", "%0A581", "581%0A", "-0", str(MAX_ID + 1)]
    for method in ("GET", "PATCH", "DELETE"):
        for raw in twisted:
            response = await admin.request(method, f"/users/{raw}", json={"name": "Twisted"})
            assert response.status_code == 404, (method, raw, response.text)
            assert response.json()["error"] == "not_found"
    assert await conn.fetchval("SELECT count(*) FROM users WHERE name = 'Twisted'") == 0
    assert await conn.fetchval("SELECT count(*) FROM users WHERE NOT is_admin") == 2
    assert (await admin.get(f"/users/{MAX_ID}")).status_code == 404


# --- bodies sent as JSON -------------------------------------------------------------------------------------------

NOT_JSON = [
    None,
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/jsonx",
    "application/json-seq",
    "application/+json",
    "text/json",
    "application/xml",
    "application/j\u017fon",  # a long s, which Unicode case folding would read as "s"
]
JSON = [
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON ; charset=UTF-8",
    "application/merge-patch+json",
    "application/vnd.example.user.v1+json",
]


def headers(content_type: str | None) -> dict:
    return {} if content_type is None else {"content-type": content_type.encode()}


@pytest.mark.parametrize("content_type", NOT_JSON)
async def test_a_body_not_sent_as_json_is_415(client, admin, conn, content_type):
    body = json.dumps({"email": "csrf@example.com", "name": "Forged", "password": PASSWORD}).encode()
    response = await client.post("/users", content=body, headers=headers(content_type))
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    user_id = await conn.fetchval("INSERT INTO users (email, name) VALUES ('kept@example.com', 'Kept') RETURNING id")
    response = await admin.patch(f"/users/{user_id}", content=b'{"name": "Forged"}', headers=headers(content_type))
    assert response.status_code == 415, response.text
    assert await conn.fetchval("SELECT array_agg(name) FROM users WHERE NOT is_admin") == ["Kept"]


async def test_a_repeated_content_type_is_415(client):
    body = json.dumps({"email": "twice@example.com", "name": "Twice", "password": PASSWORD}).encode()
    twice = [("content-type", "application/json"), ("content-type", "text/plain")]
    assert (await client.post("/users", content=body, headers=twice)).status_code == 415


@pytest.mark.parametrize("content_type", JSON)
async def test_json_and_json_suffixed_media_types_are_read(client, admin, content_type):
    body = json.dumps({"email": "typed@example.com", "name": "Typed", "password": PASSWORD}).encode()
    created = await client.post("/users", content=body, headers=headers(content_type))
    assert created.status_code == 201, created.text
    patched = await admin.patch(created.headers["location"], content=b'{"name": "P"}', headers=headers(content_type))
    assert patched.status_code == 200, patched.text


# --- emails and text -----------------------------------------------------------------------------------------------


async def test_spellings_of_one_email_are_one_account_409(client, admin):
    for email in ("dave@example.com", "josé@example.com"):
        response = await client.post("/users", json={"email": email, "name": "First", "password": PASSWORD})
        assert response.status_code == 201, response.text
    variants = [
        "DAVE@example.com",
        "dave@EXAMPLE.COM",
        " dave@example.com",
        "dave@example.com\n",
        "\tDave@Example.Com \r\n",
        "\u3000dave@example.com\u2028",
        "\x85dave@example.com\x1f",
        unicodedata.normalize("NFD", " josé@example.com"),  # e, then a combining acute accent
    ]
    for email in variants:
        response = await client.post("/users", json={"email": email, "name": "Second", "password": PASSWORD})
        assert response.status_code == 409, (email, response.text)
        assert response.json()["field"] == "email"
    body = {"email": "other@example.com", "name": "Other", "password": PASSWORD}
    other = (await client.post("/users", json=body)).json()
    for email in variants:
        response = await admin.patch(f"/users/{other['id']}", json={"email": email})
        assert response.status_code == 409, (email, response.text)
    names = [user["name"] for user in (await admin.get("/users")).json()]
    assert names == ["Admin", "First", "First", "Other"]


async def test_every_spelling_of_an_email_signs_in_to_its_account(client):
    ids = {}
    for email in ("dave@example.com", "josé@example.com"):
        response = await client.post("/users", json={"email": f" {email}\n", "name": "Dave", "password": PASSWORD})
        assert response.status_code == 201, response.text
        ids[email[:3]] = response.json()["id"]
    spellings = [
        "dave@example.com",
        "DAVE@example.com",
        " dave@example.com",
        "\tDave@Example.Com \r\n",
        "\u3000dave@example.com\u2028",
        "josé@example.com",
        unicodedata.normalize("NFD", " josé@example.com"),  # e, then a combining acute accent
        unicodedata.normalize("NFD", "JOSÉ@example.com\n"),
    ]
    for email in spellings:
        token = await sign_in(client, email)
        me = (await client.get("/users/me", headers={"Authorization": token})).json()
        assert me["id"] == ids[normal_email(email)[:3].lower()], (email, me)


async def test_an_email_is_stored_trimmed_and_composed(client, admin, conn):
    body = {"email": " \tZoë@Example.com\n", "name": "Zoë", "password": PASSWORD}
    response = await client.post("/users", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["email"] == "Zoë@Example.com"
    decomposed = unicodedata.normalize("NFD", "zoë@x.io ")
    patched = await admin.patch(response.headers["location"], json={"email": decomposed})
    assert patched.json()["email"] == "zoë@x.io"
    assert await conn.fetchval("SELECT email FROM users WHERE NOT is_admin") == "zoë@x.io"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "nl@example.com", "name": "Nl\n"}, "name"),
        ({"email": "nl@example.com", "name": "Two\nlines"}, "name"),
        ({"email": "nl@example.com", "name": "Nl\r"}, "name"),
        ({"email": "nl@example.com", "name": "Nl\u2028"}, "name"),
        ({"email": "nl@example.com", "name": "Nel\x85"}, "name"),
        ({"email": "bom\ufeff@example.com", "name": "Bom"}, "email"),
        ({"email": "bom@example.com\ufeff", "name": "Bom"}, "email"),
        ({"email": "nel\x85@example.com", "name": "Nel"}, "email"),
        ({"email": "two@example.com\nthree@example.com", "name": "Two"}, "email"),
        ({"email": "unit\x1fsep@example.com", "name": "Us"}, "email"),
    ],
)
async def test_line_breaks_and_invisible_characters_in_text_are_422(client, conn, body, field):
    response = await client.post("/users", json={**body, "password": PASSWORD})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize("char", ["\u200b", "\u00ad", "\u200d", "\u2060", "\u200e", "\u202e", "\U000e0041"])
async def test_an_address_or_a_name_that_would_look_like_another_is_422(client, admin, char):
    body = {"email": f"alice{char}@example.com", "name": "A", "password": PASSWORD}
    response = await client.post("/users", json=body)
    assert response.status_code == 422 and response.json()["field"] == "email", response.text
    response = await client.post("/users", json={"email": "alice@example.com", "name": char * 3, "password": PASSWORD})
    assert response.status_code == 422 and response.json()["field"] == "name", response.text
    alice = await client.post("/users", json={"email": "alice@example.com", "name": f"A{char}", "password": PASSWORD})
    assert alice.status_code == 201, alice.text
    patched = await admin.patch(alice.headers["location"], json={"email": f"{char}bob@example.com"})
    assert patched.status_code == 422 and patched.json()["field"] == "email", patched.text


# --- each text field as the document describes it ------------------------------------------------------------------


@functools.cache
def ecma(pattern: str):
    """The pattern as ECMA-262 reads it with the `u` flag (code points), as most JSON Schema validators run it."""
    return regress.Regex(pattern, "u").find


# Characters where Python's re and ECMA-262 are known to part ways, and those the patterns name.
TRICKY = "\n\r\t\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u180e\u2000\u200a\u200b\u2028\u2029\u202f\u205f\u3000\ufeff"
characters = st.characters(exclude_categories=["Cs"]) | st.sampled_from(TRICKY) | st.sampled_from("@.a ")
texts = st.text(characters, max_size=40) | st.builds(
    "{}{}{}".format, st.text(characters, max_size=3), st.emails(), st.text(characters, max_size=3)
)


def text_fields() -> list:
    """(Struct, field) for each text field of a body this project's handlers read (the plugins' own bodies, as
    sign-in's, are heaven-plugins' to test)."""
    handlers = [e["handler"] for e in APP.discover(DEFAULT) if e["handler"].__module__.startswith(PACKAGE)]
    bodies = {op.body for op in (getattr(handler, "openapi", None) for handler in handlers) if op}
    # A body's type may carry more schema (Annotated): its Struct is the first argument.
    structs = {typing.get_args(kind)[0] if typing.get_origin(kind) is typing.Annotated else kind for kind in bodies}
    return [
        pytest.param(struct, field, id=f"{struct.__name__}.{field.encode_name}")
        for struct in sorted(structs - {None}, key=lambda struct: struct.__name__)
        for field in msgspec.structs.fields(struct)
        if DOCUMENT["components"]["schemas"][struct.__name__]["properties"][field.encode_name].get("type") == "string"
    ]


@pytest.mark.parametrize(("struct", "field"), text_fields())
@settings(max_examples=300, deadline=None, database=None)
@given(text=texts)
def test_the_service_accepts_the_text_the_document_allows(struct, field, text):
    # The field's rule as a client reads it in the document (lengths in code points, the pattern in
    # ECMA-262), against the check the service runs when it decodes the body.
    rule = DOCUMENT["components"]["schemas"][struct.__name__]["properties"][field.encode_name]
    allowed = rule.get("minLength", 0) <= len(text) <= rule.get("maxLength", len(text))
    if "pattern" in rule:
        allowed = allowed and ecma(rule["pattern"])(text) is not None
    assert accepts(field.type, text) is allowed
