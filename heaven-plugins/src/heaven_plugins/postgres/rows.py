"""Rows bound to msgspec Structs, every value checked against its field's type."""

import inspect
from collections.abc import Sequence
from itertools import starmap
from operator import itemgetter
from typing import TypeVar

import asyncpg
import msgspec

S = TypeVar("S", bound=msgspec.Struct)


class BindError(TypeError):
    """The rows of a query do not fit the Struct they were bound to."""


def bind_rows(rows: Sequence[asyncpg.Record], struct: type[S]) -> list[S]:
    """Records to Structs, every value checked against its field's type.

    When the columns are the Struct's fields in order, the values are validated as tuples in one
    msgspec call and passed to the Struct positionally, several times faster than
    msgspec.convert over Records. Otherwise (other order, fewer columns) the rows go through dicts.
    """
    if not rows:
        return []
    fields, rows_type = _plan(struct)
    try:
        if tuple(rows[0].keys()) == fields:
            return list(starmap(struct, msgspec.convert((list(map(_values, rows)),), rows_type).rows))
        return msgspec.convert([dict(row) for row in rows], list[struct])
    except msgspec.ValidationError:
        return _explain_rows(rows, struct)


# A Record's values as a tuple: record[:] is twice as fast as tuple(record), which iterates.
_values = itemgetter(slice(None))
_plans: dict[type, tuple[tuple[str, ...], type[msgspec.Struct]]] = {}


def _plan(struct: type) -> tuple[tuple[str, ...], type[msgspec.Struct]]:
    # The column names the rows must have, and what their values are converted into: a Struct holding them
    # as a list of tuples of the fields' types. Not that list's type itself: msgspec works out what a type
    # means on every convert() of it (7k instructions for a User's), but once for a Struct's fields.
    plan = _plans.get(struct)
    if plan is None:
        if any(p.kind is p.KEYWORD_ONLY for p in inspect.signature(struct).parameters.values()):
            raise BindError(f"{struct.__name__} has keyword-only fields; bind passes fields by position")
        fields = msgspec.structs.fields(struct)
        row = tuple[tuple(field.type for field in fields)]  # type: ignore[misc]
        rows = msgspec.defstruct(f"{struct.__name__}Rows", [("rows", list[row])], array_like=True)
        plan = _plans[struct] = (tuple(field.name for field in fields), rows)
    return plan


def _explain_rows(rows: Sequence[asyncpg.Record], struct: type) -> list:
    # Errors are rare, so say which column failed the slow way, through dicts named by column.
    try:
        return msgspec.convert([dict(row) for row in rows], list[struct])
    except msgspec.ValidationError as exc:
        raise BindError(f"rows do not fit {struct.__name__}: {exc}") from None
