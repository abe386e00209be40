"""A metadata match, Chroma's `where`: which metadata a search filter, a document listing or a bulk delete
selects. `check_match` turns the caller's JSON into a checked match (or a sentence saying what is wrong);
`metadata_clauses` turns a checked match into SQL over a jsonb column, its values bound.

    {"team": "a"}                            equal (2020 is not "2020"; a list value holds it)
    {"tags": ["rust", "go"]}                 a list holding all of them
    {"year": {"$gte": 2019, "$lt": 2022}}    $eq $ne $gt $gte $lt $lte $in $nin (several: all hold)
    {"$or": [{"team": "a"}, {"year": 2020}]} $and / $or of matches, nested
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, NoReturn

from pydantic import Field, StrictBool, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from rag_server.text import Cleaned

METADATA_MATCH_RULES = (
    'A value matches an equal value of the same JSON type (2020 is not "2020") or a list holding it: '
    '{"tags": "rust"} finds tags ["rust", "go"]; a list of values finds lists holding all of them. '
    'Operators as Chroma\'s `where`: {"year": {"$gte": 2019, "$lt": 2022}} ($eq, $ne, $gt, $gte, $lt, '
    '$lte on numbers, $in, $nin), {"$or": [{...}, {...}]} and $and. A key the metadata lacks, or holds '
    "null, matches no condition, $ne and $nin included."
)

# A metadata value as stored in jsonb: text without NUL, an integer within bigint, a finite number.
MetadataKey = Annotated[str, Field(min_length=1, max_length=200), Cleaned]
# Strict numbers: a string over the length limit must be refused, not coerced ("000..." -> 0).
MetadataValue = (
    Annotated[str, Field(max_length=2_000), Cleaned]
    | Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]
    | Annotated[float, Field(strict=True, allow_inf_nan=False)]
    | StrictBool
)
MAX_CONDITIONS = 50  # conditions in one match, all levels together: bounds the SQL
MAX_DEPTH = 4  # levels of $and / $or
MAX_VALUES = 50  # values of one list ($in, $nin, or a list to hold)

_KEY: TypeAdapter[str] = TypeAdapter(MetadataKey)
_VALUE: TypeAdapter[Any] = TypeAdapter(MetadataValue)
_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_OPERATORS = {"$eq", "$ne", "$in", "$nin", *_COMPARISONS}


def check_match(raw: Any) -> dict[str, Any]:
    """`raw` as a checked match (keys and texts cleaned), else a ValueError whose sentence says where in
    it, from its top ("year.$gt: a number, not a text"); the caller's location comes before it."""
    try:
        return _match(raw, "", 1, [0])
    except ValueError as exc:
        # Pydantic's own type: its message is the sentence alone (no "Value error, "); braces stay.
        raise PydanticCustomError("metadata_match", "{reason}", {"reason": str(exc)}) from None


def refuse(where: str, why: str) -> NoReturn:
    """The refusal of a match's part: `where` in it (from its top), then why."""
    raise ValueError(f"{where}: {why}" if where else why)


def _at(where: str, part: str) -> str:
    return f"{where}.{part}" if where else part


def _match(raw: Any, where: str, depth: int, counter: list[int]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        refuse(where, 'a JSON object, like {"team": "a"}')
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("$and", "$or"):
            checked[key] = _logical(value, _at(where, key), depth, counter)
        elif isinstance(key, str) and key.startswith("$"):
            refuse(where, f"{key[:40]!r} is no operator here: $and and $or join matches")
        else:
            name = _key(key, where)  # checked first: the paths of errors below carry it
            checked[name] = _condition(value, _at(where, name), counter)
    return checked


def _logical(value: Any, where: str, depth: int, counter: list[int]) -> list[dict[str, Any]]:
    if depth >= MAX_DEPTH:
        refuse(where, f"$and / $or nested deeper than {MAX_DEPTH} levels")
    if not isinstance(value, list) or not value or len(value) > MAX_CONDITIONS:
        refuse(where, f"a list of 1 to {MAX_CONDITIONS} matches")
    matches = [_match(m, f"{where}[{i}]", depth + 1, counter) for i, m in enumerate(value)]
    if not all(matches):
        refuse(where, "an empty match would select everything")
    return matches


def _condition(value: Any, where: str, counter: list[int]) -> Any:
    if not isinstance(value, dict):
        _count(counter)
        return _values(value, where) if isinstance(value, list) else _value(value, where)
    if not value:
        refuse(where, 'an operator, like {"$gte": 2020}')
    checked: dict[str, Any] = {}
    for op, operand in value.items():
        _count(counter)
        if op not in _OPERATORS:
            refuse(where, f"{op[:40]!r} is no operator ({', '.join(sorted(_OPERATORS))})")
        if op in _COMPARISONS:
            if isinstance(operand, bool) or not isinstance(operand, int | float):
                refuse(_at(where, op), f"a number, not {_json_type(operand)}")
            checked[op] = _value(operand, _at(where, op))
        elif op in ("$in", "$nin"):
            if not isinstance(operand, list):
                refuse(_at(where, op), "a list of values")
            checked[op] = _values(operand, _at(where, op))
        else:
            checked[op] = _value(operand, _at(where, op))
    return checked


def _values(values: list[Any], where: str) -> list[Any]:
    if not values or len(values) > MAX_VALUES:
        refuse(where, f"a list of 1 to {MAX_VALUES} values")
    return [_value(v, f"{where}[{i}]") for i, v in enumerate(values)]


def _value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, dict | list):
        refuse(where, f"a text, number or true/false, not {_json_type(value)}")
    try:
        return _VALUE.validate_python(value)
    except ValidationError as exc:
        refuse(where, _first_message(exc))


def _key(key: Any, where: str) -> str:
    try:
        return _KEY.validate_python(key)
    except ValidationError as exc:
        refuse(where, f"the key {str(key)[:40]!r}: {_first_message(exc)}")


def _count(counter: list[int]) -> None:
    counter[0] += 1
    if counter[0] > MAX_CONDITIONS:
        refuse("", f"more than {MAX_CONDITIONS} conditions")


def _first_message(exc: ValidationError) -> str:
    return str(exc.errors()[0]["msg"])


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true/false"
    return "a text" if isinstance(value, str) else "null" if value is None else type(value).__name__


def metadata_clauses(
    column: str, match: dict[str, Any], params: list[Any], first_param: int = 1
) -> list[str]:
    """One clause per key of a checked `match` over the jsonb `column` (all must hold), its values
    appended to `params`, whose first element is bound to `$first_param`.

    Containment per key keeps JSON types (2020 != "2020") and looks inside lists, as imports from Chroma
    and uploads store them. A value is bound inside a one-element array (a bare str would reach the jsonb
    codec as JSON text, infra/database.py) and taken out in SQL. A key the metadata lacks, or holds
    null (an upload keeps one; PATCH's merge and Chroma's update read null as "remove the key"), gives
    NULL: no condition holds for it, negations included."""

    def bind(value: Any) -> str:
        params.append(value)
        return f"${first_param + len(params) - 1}"

    def clauses(m: dict[str, Any]) -> list[str]:
        out = []
        for key, value in m.items():
            if key in ("$and", "$or"):
                joined = f" {key[1:].upper()} ".join("(" + " AND ".join(clauses(sub)) + ")" for sub in value)
                out.append(f"({joined})")
                continue
            field = f"NULLIF({column} -> {bind(key)}::text, 'null'::jsonb)"
            if not isinstance(value, dict):
                out.append(f"{field} @> ({bind([value])}::jsonb -> 0)")
                continue
            for op, operand in value.items():
                out.append(condition(field, op, operand))
        return out

    def condition(field: str, op: str, operand: Any) -> str:
        if op in _COMPARISONS:
            # CASE: the cast runs only on numbers (a text would raise, not fail to match).
            return (
                f"(CASE WHEN jsonb_typeof({field}) = 'number' "
                f"THEN ({field})::numeric {_COMPARISONS[op]} {bind(_as_written(operand))}::numeric END)"
            )
        if op in ("$in", "$nin"):
            values = f"jsonb_array_elements({bind(operand)}::jsonb) AS v(x)"
            held = f"EXISTS (SELECT FROM {values} WHERE {field} @> v.x)"
            return held if op == "$in" else f"(({field}) IS NOT NULL AND NOT {held})"
        contains = f"{field} @> ({bind([operand])}::jsonb -> 0)"
        return contains if op == "$eq" else f"(NOT ({contains}))"

    return clauses(match)


def _as_written(number: Any) -> Any:
    """A comparison's operand as the JSON number stored metadata holds: a float by its shortest repr
    (0.9, as json.dumps writes it), not its binary expansion, which asyncpg binds to numeric exactly
    (0.90000000000000002220...: a stored 0.9 was not $gte 0.9, and was $lt 0.9)."""
    return Decimal(repr(number)) if isinstance(number, float) else number
