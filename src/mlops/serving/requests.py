"""What a client sends, read and checked before anything is scored: its JSON, its ids and strings, and its rows
against the served model's contract (``FeatureSpec``).

Every serving mode (API, batch, push) checks rows here, so a row is refused, or accepted, the same way in each.
The contract is read as plain JSON, never through ``mlops.data.schema``: serving imports nothing of ``mlops.data``,
which needs pandas.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlops.serving.errors import InvalidInput, MalformedRequest, shown

# What a client may send, bounded: identifiers travel into DynamoDB keys, SQS and SNS attributes and captures,
# strings into the model's input tensors.
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 1024
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # "\ud800" in JSON decodes to a code point UTF-8 cannot encode


def _bound(limit: Any, widest: float) -> float | None:
    """A contract's bound as a float every finite value is compared with as the full check compares it (an absent
    bound is the widest finite float, so that infinity stays out); None for a bound the fast check cannot stand for."""
    if limit is None:
        return widest
    if isinstance(limit, bool) or not isinstance(limit, int | float):
        return None
    try:
        number = float(limit)
    except OverflowError:
        return None
    if math.isnan(number) or number != limit:  # a NaN bound, or an integer a float cannot hold exactly
        return None
    return max(number, -sys.float_info.max) if widest < 0 else min(number, sys.float_info.max)


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: str  # numeric | integer | boolean | categorical
    nullable: bool
    minimum: float | None
    maximum: float | None
    categories: frozenset[str] | None
    # What validate_row's common case needs, worked out once per model rather than once per value: the range a float
    # must be in to be taken as it is (finite, within the contract's bounds), and whether a category may be taken
    # as sent once it is found among the declared ones. Anything else takes the full check and its error message.
    _low: float = field(init=False, repr=False, compare=False)
    _high: float = field(init=False, repr=False, compare=False)
    _as_sent: str = field(init=False, repr=False, compare=False)  # "float", "integer", "category" or ""

    def __post_init__(self) -> None:
        low, high = _bound(self.minimum, -sys.float_info.max), _bound(self.maximum, sys.float_info.max)
        as_sent = ""
        if self.kind in ("numeric", "integer") and low is not None and high is not None:
            as_sent = "float" if self.kind == "numeric" else "integer"
        elif self.kind == "categorical" and self.categories is not None and all(
                len(c) <= MAX_TEXT_CHARS and not _SURROGATE.search(c) for c in self.categories):
            as_sent = "category"
        object.__setattr__(self, "_low", low if low is not None else math.inf)
        object.__setattr__(self, "_high", high if high is not None else -math.inf)
        object.__setattr__(self, "_as_sent", as_sent)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "nullable": self.nullable}
        if self.minimum is not None:
            out["min"] = self.minimum
        if self.maximum is not None:
            out["max"] = self.maximum
        if self.categories is not None:
            out["categories"] = sorted(self.categories)
        return out


def schema_from_contract(contract: Mapping[str, Any]) -> list[FeatureSpec]:
    return [
        FeatureSpec(
            name=c["name"], kind=c["kind"], nullable=bool(c.get("nullable")), minimum=c.get("min"),
            maximum=c.get("max"),
            categories=frozenset(str(v) for v in c["categories"]) if c.get("categories") is not None else None,
        )
        for c in contract["columns"]
        if c["name"] != contract["target"]
    ]


# How deep a client's document may nest. The parser's own limit is the interpreter's recursion limit less the stack
# already in use, which differs between callers (the resolver's path is deeper than the predict fast path): the same
# body must get the same answer whoever reads it, so past this depth every reader refuses it with one message.
MAX_NESTING = 64


# A JSON string literal; linear on text the parser accepted (every string is closed, and the two alternatives cannot
# both match a character), which is the only text it is run on
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _nesting(text: str) -> int:
    """How deep a valid JSON text nests arrays and objects. Measured on the text, not on the parsed value: a key given
    twice keeps only its last value, and the parser has already had to go down the first."""
    deepest = depth = 0
    for found in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if found.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(data: str | bytes, what: str = "the body") -> Any:
    """A client's JSON document. What the parser gives up on (not UTF-8, not JSON, nested too deeply, an integer
    literal too long to read) is the client's to fix: a MalformedRequest naming the body, never a crash."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"{what} is not UTF-8 text: byte {exc.start} is {data[exc.start:exc.start + 1]!r}; "
                               "send JSON encoded as UTF-8", "body") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedRequest(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                               "body") from exc
    except RecursionError as exc:
        raise _nested_too_deep(what) from exc
    except ValueError as exc:  # an integer literal longer than Python converts (sys.get_int_max_str_digits())
        raise MalformedRequest(f"{what} holds an integer literal of more than {sys.get_int_max_str_digits()} digits; "
                               "no field takes a number that long", "body") from exc
    # counting brackets is cheap next to the parse; a document with fewer cannot nest deeper than that
    if text.count("[") + text.count("{") > MAX_NESTING and _nesting(text) > MAX_NESTING:
        raise _nested_too_deep(what)
    return document


def _nested_too_deep(what: str) -> MalformedRequest:
    return MalformedRequest(f"{what} is nested more than {MAX_NESTING} levels deep; a request is an object of fields "
                            "with plain values", "body")


def finite_number(value: Any, field: str) -> float:
    """A JSON number as a finite float: an integer beyond a float's range (10**400) is as infinite as 1e400."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{field}: expected a number, got {type(value).__name__} {shown(value)}", field)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidInput(f"{field}: expected a finite number, got {shown(value)}", field)
    return number


def bounded_text(value: str | int, field: str, limit: int = MAX_TEXT_CHARS) -> str:
    """A string (or an integer written as one) of at most ``limit`` characters that UTF-8 can carry."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:  # more digits than the limit: not worth writing
        raise InvalidInput(f"{field}: {shown(value)}; at most {limit} characters", field)
    text = str(value)
    if len(text) > limit:
        raise InvalidInput(f"{field}: {len(text)} characters; at most {limit}", field)
    if _SURROGATE.search(text):
        raise InvalidInput(f"{field}: {shown(text)} holds an unpaired surrogate (\\ud800-\\udfff); send valid "
                           "Unicode", field)
    return text


def identifier(value: Any, field: str, what: str) -> str:
    """An id a client names something by: a non-empty, printable string of at most MAX_ID_CHARS characters."""
    if not isinstance(value, str):
        raise InvalidInput(f"'{field}' ({what}) must be a string, got {type(value).__name__}", field)
    if not value.strip():
        raise InvalidInput(f"'{field}' ({what}) must not be empty", field)
    text = bounded_text(value, field, MAX_ID_CHARS)
    if not text.isprintable():
        raise InvalidInput(f"'{field}' must be printable, got {shown(text)}", field)
    return text


_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def _check_value(spec: FeatureSpec, value: Any, where: str) -> Any:
    field = f"{where}.{spec.name}"
    if value is None:
        if spec.nullable:
            return None
        raise InvalidInput(f"{field}: a value is required (the model was not trained with missing values here)", field)
    if spec.kind == "categorical":
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidInput(f"{field}: expected a string category, got {type(value).__name__}", field)
        text = bounded_text(value, field)
        if spec.categories is not None and text not in spec.categories:
            known = ", ".join(sorted(spec.categories)[:20])
            raise InvalidInput(f"{field}: unknown category {shown(text)} (known: {known})", field)
        return text
    if spec.kind == "boolean":
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, float | str) or (isinstance(value, int) and abs(value) <= 1):
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return 1.0 if text in _TRUE else 0.0
        raise InvalidInput(f"{field}: expected true or false, got {shown(value)}", field)
    number = finite_number(value, field)
    if spec.kind == "integer" and not number.is_integer():
        raise InvalidInput(f"{field}: expected a whole number, got {shown(value)}", field)
    if spec.minimum is not None and number < spec.minimum:
        raise InvalidInput(f"{field}: {shown(value)} is below the allowed minimum {spec.minimum}", field)
    if spec.maximum is not None and number > spec.maximum:
        raise InvalidInput(f"{field}: {shown(value)} is above the allowed maximum {spec.maximum}", field)
    return number


def validate_row(row: Any, schema: Sequence[FeatureSpec], where: str) -> dict[str, Any]:
    if type(row) is dict and len(row) == len(schema):
        # The common case first, a JSON object with exactly the model's features: a value the full check would take
        # unchanged is taken as it is, any other is converted by the full check. Anything wrong (a missing feature, a
        # refused value) is left to the full check below, which says what is wrong first.
        clean: dict[str, Any] = {}
        for spec in schema:
            name = spec.name
            if name not in row:
                break
            value = row[name]
            kind = spec._as_sent
            if (type(value) is float and spec._low <= value <= spec._high
                    and (kind == "float" or (kind == "integer" and value.is_integer()))) or (
                    kind == "category" and type(value) is str and value in spec.categories):  # type: ignore[operator]
                clean[name] = value
                continue
            try:
                clean[name] = _check_value(spec, value, where)
            except InvalidInput:
                break
        else:
            if len(clean) == len(row):  # as many distinct features as keys: nothing extra
                return clean
    if not isinstance(row, Mapping):
        raise InvalidInput(f"{where}: expected an object of feature: value, got {type(row).__name__}", where)
    names = [s.name for s in schema]
    missing = [n for n in names if n not in row]
    if missing:
        raise InvalidInput(f"{where}: missing feature(s) {shown(missing)}", f"{where}.{missing[0]}")
    extra = sorted(set(row) - set(names))
    if extra:
        raise InvalidInput(f"{where}: unexpected feature(s) {shown(extra)}; the model takes {names}",
                           f"{where}.{extra[0]}")
    return {spec.name: _check_value(spec, row[spec.name], where) for spec in schema}
