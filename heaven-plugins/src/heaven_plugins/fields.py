"""What every resource shares: ids read from the path, the page query, and the text field types."""

import unicodedata
from typing import Annotated, Any

from msgspec import Meta, Struct

from .web import HTTPError

MAX_ID = 2**63 - 1  # ids are bigint; a larger one can name no row
_MAX_ID_DIGITS = len(str(MAX_ID))

Id = Annotated[int, Meta(ge=1, le=MAX_ID)]


def path_id(req, resource: str, name: str = "id") -> int:
    """The id in the route's `:<name>` segment, or a 404 "no <resource> with id ...".

    An id is written in plain ASCII digits, without sign, leading zero or underscore, and is at most
    MAX_ID: `/users/+581`, `/users/0581`, `/users/5_81` or an Arabic-Indic `/users/٣` name nothing,
    where Heaven's `:id:int` (Python's int()) would read them all. The OpenAPI document describes a
    path parameter named `id` or `<thing>_id` as such an id (docs.py).
    """
    text = req.params[name]
    # isdigit() alone would accept other scripts' digits, and int() signs, spaces and underscores too.
    if text.isascii() and text.isdigit() and text[0] != "0" and len(text) <= _MAX_ID_DIGITS:
        value = int(text)
        if value <= MAX_ID:
            return value
    raise not_found(resource, text)


def not_found(resource: str, id: Any) -> HTTPError:
    """The 404 of a `resource` that has no row with this id."""
    return HTTPError(404, "not_found", f"no {resource} with id {id}")


class Page(Struct):
    """The query of a list in id order, a page at a time: pass the last id you saw as `after` for the next page."""

    limit: Annotated[int, Meta(ge=1, le=100, description="rows per page")] = 20
    after: Annotated[int, Meta(ge=0, le=MAX_ID, description="the last id of the previous page")] = 0


# Each pattern is read in two regex dialects, which must accept exactly the same strings: Python's `re`
# (msgspec checks input with it) and ECMA-262 (JSON Schema's: what clients and validators read in the
# OpenAPI document). So no \s, \w or \d, which each dialect defines its own way: only explicit
# classes. And no `$`, which in Python also matches before a final newline: "no character follows",
# (?![\s\S]), ends a string in both. tests/test_fields.py holds both engines to this.
_END = r"(?![\s\S])"
_CONTROL = r"\x00-\x1f\x7f-\x9f"  # C0 and C1 controls; Postgres text cannot hold the first, NUL
# What str.strip() removes: the characters Python calls whitespace (Unicode's White_Space and \x1c-\x1f).
_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Characters that show nothing: Unicode's format controls (category Cf: zero-width spaces and joiners,
# the soft hyphen, bidi marks and overrides, the byte-order mark) and the fillers and selectors that
# render blank. An address holding one displays as another; a name of only these displays as nothing.
_INVISIBLE = (
    r"\xad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    r"\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"
)
# The format controls beyond the first 65,536 code points, written as the characters themselves: ECMA-262
# without its `u` flag reads a pattern in UTF-16, where such a character is two code units, and only a
# sequence of the two (never a class) then means what it means to Python and to ECMA-262 with `u`.
_ASTRAL_FORMAT = [0x110BD, 0x110CD, *range(0x13430, 0x13440), *range(0x1BCA0, 0x1BCA4)]
_ASTRAL_FORMAT += [*range(0x1D173, 0x1D17B), 0xE0001, *range(0xE0020, 0xE0080)]
_ASTRAL_INVISIBLE = "|".join(map(chr, _ASTRAL_FORMAT))
# One character past the first 65,536, in all three readings: a UTF-16 pair, or a code point above U+FFFF;
# then, looking back at it, whether it is one of the invisible ones. Looked for only once such a character
# is there, so that others never pay for the search.
_ASTRAL = r"(?:[\ud800-\udbff][\udc00-\udfff]|[^\u0000-\uffff])"
_ASTRAL_SHOWN = rf"{_ASTRAL}(?<!{_ASTRAL_INVISIBLE})"
_ASTRAL_HIDDEN = rf"{_ASTRAL}(?<={_ASTRAL_INVISIBLE})"
# Not such a character, before a class that must not take one: Python's classes hold code points, so
# `[^a]` takes U+E0041 unless told; without `u`, ECMA-262 never sees a code point above U+FFFF.
_NOT_ASTRAL = r"(?![^\u0000-\uffff])"
# Within an address: no @, none of _SPACE, _CONTROL or _INVISIBLE, and none of what would make a mail header of it
# more than one plain address (a list's , and ;, a display name's <>, "" and (), a group's :, a literal's []).
_ADDRESS_CHAR = (
    rf"{_NOT_ASTRAL}[^@,;:<>()\[\]\\\x22\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000{_INVISIBLE}\ud800-\udfff]"
    rf"|{_ASTRAL_SHOWN}"
)
_ADDRESS_PART = rf"(?:{_ADDRESS_CHAR})+"
_EMAIL = rf"^[{_SPACE}]*{_ADDRESS_PART}@{_ADDRESS_PART}\.{_ADDRESS_PART}[{_SPACE}]*{_END}"
# The blanks a line of text may hold, as long as something visible stands among them.
_BLANK = r"\x20\xa0\u1680\u2000-\u200a\u202f\u205f\u3000" + _INVISIBLE


def Text(max_length: int, *, min_length: int = 1, multiline: bool = False, description: str | None = None) -> Any:
    """A str field of `min_length` to `max_length` characters with no control characters, and at least one
    visible one; `multiline` lets in tabs and line breaks (\\t, \\n, \\r). Use it as a type: `title: Text(200)`."""
    # Multiline lets in \t, \n and \r; one line refuses the line and paragraph separators as well.
    refused = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f" if multiline else _CONTROL + r"\u2028\u2029"
    blank = _BLANK + (r"\t\n\r\u2028\u2029" if multiline else "")
    # Blanks, then one visible character, then anything allowed: each step's characters are the next
    # one's strangers, so a long blank text is refused in one pass, with no backtracking.
    visible = rf"(?:{_NOT_ASTRAL}[^{refused}{blank}\ud800-\udfff]|{_ASTRAL_SHOWN})"
    text = rf"(?:[{blank}]|{_ASTRAL_HIDDEN})*{visible}[^{refused}]*"
    pattern = rf"^{text}{_END}" if min_length else rf"^(?:{text})?{_END}"
    # What a 422 says of a mismatch (web.py), in place of the pattern.
    mismatch = "must show something and hold no control character"
    meta = Meta(
        pattern=pattern,
        min_length=min_length,
        max_length=max_length,
        description=description,
        extra={"mismatch": mismatch if multiline else f"{mismatch} or line break"},
    )
    return Annotated[str, meta]


# One line of 1 to 100 characters, something visible among them.
Name = Text(100)
# Spaces around an address are allowed and trimmed (normal_email), so that a pasted address is read as meant.
Email = Annotated[
    str,
    Meta(
        pattern=_EMAIL,
        max_length=254,
        description="an address with one @ and a dot after it, no space, control or invisible character and "
        'none of , ; : < > ( ) [ ] \\ "; spaces around it are trimmed',
        extra={"mismatch": "is not a valid email address"},
    ),
]


def normal_email(email: str) -> str:
    """An Email as stored: trimmed, and in Unicode's composed form (NFC), so that two spellings of one
    address are one. Case is kept, and compared without it by the database's unique index."""
    return unicodedata.normalize("NFC", email.strip())
