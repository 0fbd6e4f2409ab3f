"""HTTP for handlers: JSON bodies read and sent, errors raised as HTTPError, a 422 naming the field at fault."""

import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
import msgspec.inspect

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
_JSON = ("Content-Type", "application/json")
_JSON_HEADER = (b"Content-Type", b"application/json")  # as Heaven's setter writes it
# A body read as JSON must say it is JSON: browsers send text/plain, form and multipart bodies to any
# site without asking it first (no CORS preflight), so reading those as JSON would let any web page
# post here on its visitors' behalf. `+json` types (application/merge-patch+json...) are JSON too.
# ASCII only: with Unicode case folding, "json" spelt with U+017F (a long s) would pass.
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[-!#$%&'*+.^_`|~0-9a-z]+\+)?json", re.ASCII | re.IGNORECASE)


def public(handler):
    """Mark a handler as needing no token (sign-up, sign-in, health, docs): read by a guard (sign-in's)."""
    handler.public = True
    return handler


class HTTPError(Exception):
    """Raise from a handler to answer `{"error": code, "detail": ..., "field": ...}` with `status`,
    and `headers` (name, value pairs) such as `WWW-Authenticate` or `Retry-After`."""

    def __init__(
        self, status: int, code: str, detail: str, field: str | None = None, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.field, self.headers = status, code, detail, field, headers

    def body(self) -> dict[str, Any]:
        error = {"error": self.code, "detail": self.detail}
        if self.field:
            error["field"] = self.field
        return error


def send(res, body: Any, status: int = 200) -> None:
    """Answer with `body` encoded by msgspec (Structs, lists, dicts, datetimes...) as JSON."""
    res.status = status
    headers = res.headers
    if headers:  # Heaven's setter replaces a Content-Type set before
        res.headers = _JSON
    else:  # the usual answer, with no header yet: appended, not rebuilt by the setter
        headers.append(_JSON_HEADER)
    # Bytes kept as they are, which is all Heaven's body setter does with them, through a singledispatch
    # (a weak-keyed cache lookup) and two hasattr() that fail: 3.5k instructions (bench/results/profile.md).
    res._body = _encode(body)


def read(req, decode: Callable[[bytes], T]) -> T:
    """Decode the request body with a msgspec decoder: 415 when it is not sent as JSON (Content-Type
    `application/json` or `application/<x>+json`), 400 when it is not JSON, 422 when it is the wrong shape."""
    media_type = req.headers.get("content-type")  # a str, or a list when the header is repeated
    if media_type != "application/json" and not (
        isinstance(media_type, str) and _JSON_MEDIA_TYPE.fullmatch(media_type.partition(";")[0].strip(" \t"))
    ):
        raise HTTPError(415, "unsupported_media_type", "send the body as JSON, with Content-Type: application/json")
    body = req.body
    try:
        return decode(body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: keep it first
        # A decoder's own type says what its fields' patterns mean (msgspec.Decoder(T).decode).
        raise _invalid(exc, getattr(getattr(decode, "__self__", None), "type", None)) from None
    except msgspec.DecodeError as exc:
        raise HTTPError(400, "malformed_json", _malformed(str(exc), body)) from None
    except UnicodeDecodeError as exc:  # msgspec raises this, not DecodeError, for a string that is not UTF-8
        raise HTTPError(400, "malformed_json", f"the JSON is malformed: {exc.reason} (byte {exc.start})") from None


def read_query(req, struct: type[T]) -> T:
    """The query string as a `struct` (values read as its fields' types, bounds checked): 422 naming the field."""
    # Not Heaven's req.queries, which keeps a value its hint cannot read as a string, silently.
    raw = req.querystring.decode("latin-1")
    if "%" in raw or "+" in raw:
        query = dict(parse_qsl(raw))
    else:  # the usual `limit=20&after=40`, split four times faster than parse_qsl does it
        # A loop, not a comprehension over a generator: two frames fewer, 3k instructions (bench/results/profile.md).
        query = {}
        for pair in raw.split("&"):
            key, _, value = pair.partition("=")
            if key:
                query[key] = value
    try:
        return msgspec.convert(query, struct, strict=False)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, struct) from None


# msgspec's messages, read back: "Expected `str` of length >= 8 - at `$.password`", "Expected `int`,
# got `str` - at `$.limit`", "Object missing required field `name`", "Expected `str` matching regex
# '<the pattern>' - at `$.email`". Each becomes a short sentence naming the field; never the pattern.
_MESSAGE = re.compile(r"(?P<what>.*?)(?: - at `\$(?:\.(?P<path>[^`\[]+))?[^`]*`)?", re.DOTALL)
_EXPECTED = re.compile(r"Expected `(?P<type>\w+)`(?P<rest>.*)", re.DOTALL)
_BOUND = re.compile(r" (?:of length )?(?P<op>[<>]=?) (?P<limit>[-\d.e+]+)")
_OBJECT = re.compile(r"Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]+)`")
_JSON_TYPES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "object": "an object",
    "array": "an array",
    "null": "null",
    "bytes": "a base64 string",
    "datetime": "a date and time (RFC 3339)",
}
_BOUNDS = {">=": "at least", ">": "more than", "<=": "at most", "<": "less than"}
_UNITS = {"str": "character", "bytes": "byte", "object": "field", "array": "item"}


def _invalid(exc: msgspec.ValidationError, kind: Any = None) -> HTTPError:
    """A 422 saying what is wrong with which field, in words (`kind`: the type decoded, whose
    fields' `Meta(extra={"mismatch": ...})` says what a pattern mismatch means)."""
    message = str(exc)
    whole = _MESSAGE.fullmatch(message)
    what, field = whole.group("what"), whole.group("path")
    named = _OBJECT.fullmatch(what)
    if named:
        field = named.group("name")
        if named.group("what") == "missing required":
            return HTTPError(422, "invalid", f"{field} is required", field)
        return HTTPError(422, "invalid", f"{field} is not a field of this request", field)
    subject = field or "the body"
    expected = _EXPECTED.fullmatch(what)
    if expected is None:  # a message of another form: msgspec's own words, with no regex in them
        return HTTPError(422, "invalid", re.sub(r" matching regex '.*'", " in the expected form", message), field)
    kind_name, rest = expected.group("type"), expected.group("rest")
    wanted = _JSON_TYPES.get(kind_name, kind_name)
    if rest.startswith(", got `"):
        got = rest[7:].rstrip("`")
        return HTTPError(422, "invalid", f"{subject} must be {wanted}, not {_JSON_TYPES.get(got, got)}", field)
    if rest.startswith(" matching regex"):
        rule = _mismatch(kind, field) or "is not in the form its description in /docs gives"
        return HTTPError(422, "invalid", f"{subject} {rule}", field)
    bound = _BOUND.match(rest)
    if bound:
        limit = bound.group("limit")
        if " of length " in rest[: bound.end()]:
            unit = _UNITS.get(kind_name, "item")
            limit += f" {unit}" if limit == "1" else f" {unit}s"
        return HTTPError(422, "invalid", f"{subject} must be {_BOUNDS[bound.group('op')]} {limit}", field)
    return HTTPError(422, "invalid", f"{subject} must be {wanted}{rest}", field)


def _mismatch(kind: Any, field: str | None) -> str | None:
    # What the field's type says a pattern mismatch means, if it says: Meta(extra={"mismatch": "is not ..."}).
    if kind is None or field is None:
        return None
    try:
        info = msgspec.inspect.type_info(kind)
    except Exception:  # a type msgspec cannot describe: the generic words do
        return None
    for candidate in getattr(info, "fields", ()):
        if candidate.encode_name == field:
            extra = getattr(candidate.type, "extra", None) or {}
            return extra.get("mismatch")
    return None


def _malformed(message: str, body: bytes) -> str:
    # msgspec says "Input data was truncated" for an empty body as for one cut short.
    if not body.strip():
        return "the body is empty: send a JSON object"
    if message == "Input data was truncated":
        return "the JSON ends too early: a bracket, brace or string is not closed"
    if message == "Invalid UTF-8 encoded string":
        return "the JSON holds a string that is not UTF-8"
    return message.replace("JSON is malformed", "the JSON is malformed", 1)
