"""Fields (fields.py): ids documented as the service reads them, emails and text that refuse what shows
nothing, and text patterns that the service (Python's re) and the OpenAPI document's readers (ECMA-262,
JSON Schema's dialect) read alike."""

import functools
import re
import typing
import unicodedata

import msgspec
import pytest
import regress
from heaven.constants import DEFAULT
from hypothesis import given, settings
from hypothesis import strategies as st

from example import PROJECT, Settings, create_app
from heaven_plugins.docs import openapi
from heaven_plugins.fields import MAX_ID, Email, Name, Text, normal_email

APP = create_app(Settings())  # builds the routes; connects to nothing
DOCUMENT = openapi(APP, PROJECT)
MULTILINE = Text(1000, multiline=True)


def pattern_of(kind) -> str:
    return msgspec.json.schema(kind)["pattern"]


def patterns_in(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
        return found.union(*(patterns_in(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(patterns_in(value) for value in node))
    return set()


# Every pattern the document shows, and the multiline Text no route uses yet.
PATTERNS = sorted(patterns_in(DOCUMENT) | {pattern_of(MULTILINE)})
PATTERN_IDS = [f"pattern{n}" for n in range(len(PATTERNS))]


def accepts(kind, text: str) -> bool:
    try:
        msgspec.convert(text, kind)
    except msgspec.ValidationError:
        return False
    return True


# --- ids in the path -----------------------------------------------------------------------------------------------


def test_the_document_describes_an_id_as_the_service_reads_it():
    for path, methods in DOCUMENT["paths"].items():
        for operation in methods.values():
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "path" and parameter["name"] == "id":
                    assert parameter["schema"] == {"type": "integer", "minimum": 1, "maximum": MAX_ID}, path


# --- emails and text -----------------------------------------------------------------------------------------------


# Characters that show nothing though Unicode does not call them format controls (Cf): the combining
# grapheme joiner, Hangul and Khmer fillers, variation selectors, Mongolian ones, the blank braille cell,
# and U+2065, unassigned amid the invisible operators.
BLANK = "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2065\u2800\u3164\uffa0"
BLANK += "".join(map(chr, range(0xFE00, 0xFE10)))
# Every character: the Basic Multilingual Plane, and beyond it each format control and a sample of the rest.
EVERY = [chr(code) for code in range(0x10000) if not 0xD800 <= code < 0xE000]  # no lone surrogates: JSON cannot
EVERY += [chr(code) for code in range(0x10000, 0x110000) if unicodedata.category(chr(code)) == "Cf" or code % 97 == 0]


def invisible(char: str) -> bool:
    """Shows nothing, or nothing but a break: a space, a control, a format control, a blank."""
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") or char in BLANK


# What would make a mail header of an address more than one plain address: a list, a display name, a group, a literal.
NOT_ONE_ADDRESS = ',;:<>()[]\\"'


def test_an_address_refuses_spaces_controls_and_invisible_characters_and_trims_spaces_around():
    for char in EVERY:
        refused = invisible(char) or char == "@" or char in NOT_ONE_ADDRESS
        assert accepts(Email, f"a{char}b@example.com") is not refused, hex(ord(char))
        assert accepts(Email, f"{char}a@example.com") is (char.isspace() or not refused), hex(ord(char))
        if char.isspace():
            assert normal_email(f"{char}a@example.com{char}") == "a@example.com", hex(ord(char))


def test_a_line_of_text_refuses_controls_and_line_breaks_and_multiline_text_only_controls():
    for char in EVERY:
        control = unicodedata.category(char) == "Cc"
        assert accepts(Name, f"a{char}") is not (control or char in "\u2028\u2029"), hex(ord(char))
        assert accepts(MULTILINE, f"a{char}") is not (control and char not in "\t\n\r"), hex(ord(char))


def test_text_needs_something_visible():
    for char in EVERY:
        assert accepts(Name, f"{char}\u200b{char} ") is not invisible(char), hex(ord(char))
        assert accepts(MULTILINE, f"\n{char}\t") is not invisible(char), hex(ord(char))
    assert accepts(Text(10, min_length=0), "") and not accepts(Text(10, min_length=0), " ")


# --- one pattern, two dialects -------------------------------------------------------------------------------------


@functools.cache
def engines(pattern: str) -> tuple:
    """The pattern as Python's re (msgspec's check) and as ECMA-262 reads it: with the `u` flag (code points)
    and without it (UTF-16 code units), the two ways JSON Schema validators run it."""
    return re.compile(pattern).search, regress.Regex(pattern, "u").find, regress.Regex(pattern).find


def verdicts(pattern: str, text: str) -> tuple[bool, ...]:
    # Each engine searches, as msgspec does: the pattern's `^` anchors the start.
    return tuple(find(text) is not None for find in engines(pattern))


PLACES = ("{}", "a{}", "{}a@b.c", "a{}@b.c", "a@b{}.c", "a@b.c{}", "a@b.c{0}{0}")


@pytest.mark.parametrize("pattern", PATTERNS, ids=PATTERN_IDS)
def test_every_character_reads_alike_in_both_dialects_wherever_it_stands(pattern):
    for code in [*range(0xD800), *range(0xE000, 0x10000), *range(0x10000, 0x110000, 0x7F)]:
        char = chr(code)
        for place in PLACES:
            text = place.format(char)
            seen = verdicts(pattern, text)
            assert len(set(seen)) == 1, (pattern, text, seen)


# Characters where the dialects are known to part ways, and those the patterns name.
TRICKY = "\n\r\t\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u180e\u2000\u200a\u200b\u2028\u2029\u202f\u205f\u3000\ufeff"
characters = st.characters(exclude_categories=["Cs"]) | st.sampled_from(TRICKY) | st.sampled_from("@.a ")
texts = st.text(characters, max_size=40) | st.builds(
    "{}{}{}".format, st.text(characters, max_size=3), st.emails(), st.text(characters, max_size=3)
)


# Single characters are checked exhaustively above; these mix them, 200 strings a pattern (500 made these three the
# library suite's slowest tests, 23 s).
@pytest.mark.parametrize("pattern", PATTERNS, ids=PATTERN_IDS)
@settings(max_examples=200, deadline=None, database=None)
@given(text=texts)
def test_generated_strings_read_alike_in_both_dialects(pattern, text):
    seen = verdicts(pattern, text)
    assert len(set(seen)) == 1, seen


def text_fields() -> list:
    """(Struct, field) for each text field of a body a documented handler reads."""
    bodies = {op.body for op in (getattr(e["handler"], "openapi", None) for e in APP.discover(DEFAULT)) if op}
    # A body's type may carry more schema (Annotated): its Struct is the first argument.
    structs = {typing.get_args(kind)[0] if typing.get_origin(kind) is typing.Annotated else kind for kind in bodies}
    return [
        pytest.param(struct, field, id=f"{struct.__name__}.{field.encode_name}")
        for struct in sorted(structs - {None}, key=lambda struct: struct.__name__)
        for field in msgspec.structs.fields(struct)
        if DOCUMENT["components"]["schemas"][struct.__name__]["properties"][field.encode_name].get("type") == "string"
    ]


@pytest.mark.parametrize(("struct", "field"), text_fields())
@settings(max_examples=100, deadline=None, database=None)  # Hypothesis's default, for each of a dozen fields
@given(text=texts)
def test_the_service_accepts_the_text_the_document_allows(struct, field, text):
    # The field's rule as a client reads it in the document (lengths in code points, the pattern in
    # ECMA-262), against the check the service runs when it decodes the body.
    rule = DOCUMENT["components"]["schemas"][struct.__name__]["properties"][field.encode_name]
    allowed = rule.get("minLength", 0) <= len(text) <= rule.get("maxLength", len(text))
    if "pattern" in rule:
        allowed = allowed and verdicts(rule["pattern"], text)[1]  # ECMA-262 with `u`, as most validators read it
    assert accepts(field.type, text) is allowed
