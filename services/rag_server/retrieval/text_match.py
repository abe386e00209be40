"""A text match, Chroma's `where_document`: which chunks a search filter keeps, or which documents a listing
or a bulk delete selects, by the words of their text. `check_text_match` turns the caller's JSON into a
checked match (or a sentence saying what is wrong); `text_clause` turns a checked match into SQL.

    {"$contains": "insulin"}                       the text holds it (case and accents as written)
    {"$not_contains": "draft"}                     the text does not hold it
    {"$or": [{"$contains": "a"}, {"$contains": "b"}]}  $and / $or of matches, nested

A search filter tests each chunk's own text, as Chroma tests each record's. A document is tested on its
chunks: it contains a text when one of its chunks does (a phrase cut by a chunk boundary may be missed;
chunks overlap), and does not contain it when none does; a document with no chunks matches neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from rag_server.retrieval.metadata_match import MAX_CONDITIONS, MAX_DEPTH, refuse
from rag_server.text import Cleaned, canonical

TEXT_MATCH_RULES = (
    'Chroma\'s `where_document`: {"$contains": "insulin"} or {"$not_contains": "draft"} (exact text: case '
    'and accents as written), joined by {"$and": [...]} or {"$or": [...]}. Several operators in one object '
    "must all hold."
)

_WORDS: TypeAdapter[str] = TypeAdapter(Annotated[str, Field(min_length=1, max_length=1_000), Cleaned])
_OPERATORS = ("$contains", "$not_contains", "$and", "$or")


def check_text_match(raw: Any) -> dict[str, Any]:
    """`raw` as a checked match (texts cleaned), else a ValueError whose sentence says where in it, from
    its top ("$or[1].$contains: at least 1 character"); the caller's location comes before it."""
    try:
        return _match(raw, "", 1, [0])
    except ValueError as exc:
        raise PydanticCustomError("text_match", "{reason}", {"reason": str(exc)}) from None


def _match(raw: Any, where: str, depth: int, counter: list[int]) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        refuse(where, 'a JSON object with an operator, like {"$contains": "insulin"}')
    checked: dict[str, Any] = {}
    for op, operand in raw.items():
        at = f"{where}.{op}" if where else op
        if op not in _OPERATORS:
            refuse(where, f"{str(op)[:40]!r} is no operator ({', '.join(_OPERATORS)})")
        if op in ("$and", "$or"):
            if depth >= MAX_DEPTH:
                refuse(at, f"$and / $or nested deeper than {MAX_DEPTH} levels")
            if not isinstance(operand, list) or not operand or len(operand) > MAX_CONDITIONS:
                refuse(at, f"a list of 1 to {MAX_CONDITIONS} matches")
            checked[op] = [_match(m, f"{at}[{i}]", depth + 1, counter) for i, m in enumerate(operand)]
            continue
        counter[0] += 1
        if counter[0] > MAX_CONDITIONS:
            refuse("", f"more than {MAX_CONDITIONS} conditions")
        if not isinstance(operand, str):
            refuse(at, "a text")
        if "\x00" in operand:
            # Free text elsewhere has each NUL made a space; here that would match (or, negated, select
            # for a delete) a different text. No stored text holds a NUL.
            refuse(at, "a text without NUL characters")
        try:
            words = _WORDS.validate_python(operand)
        except ValidationError as exc:
            refuse(at, str(exc.errors()[0]["msg"]))
        # Canonical (NFC, ligatures spelled out), as stored text is (parsing, import): "Gro" + U+0308 +
        # "ße" typed decomposed is the text "Größe" the chunks hold.
        checked[op] = canonical(words)
    return checked


def text_clause(
    match: dict[str, Any], params: list[Any], first_param: int, contains: Callable[[str], str]
) -> str:
    """A checked `match` as one SQL condition, its texts appended to `params` (whose first element is bound
    to `$first_param`). `contains(p)`: the condition that the tested text holds the text bound to `p`;
    `$not_contains` is its negation."""

    def bind(value: str) -> str:
        params.append(value)
        return f"${first_param + len(params) - 1}"

    def condition(m: dict[str, Any]) -> str:
        parts = []
        for op, operand in m.items():
            if op in ("$and", "$or"):
                parts.append("(" + f" {op[1:].upper()} ".join(condition(sub) for sub in operand) + ")")
            elif op == "$contains":
                parts.append(contains(bind(operand)))
            else:
                parts.append(f"NOT ({contains(bind(operand))})")
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    return condition(match)


def chunk_contains(text_column: str) -> Callable[[str], str]:
    """A chunk's own text holds the text: strpos, so `%` and `_` are literal (a LIKE pattern would not be)."""
    return lambda param: f"strpos({text_column}, {param}::text) > 0"


def document_clause(match: dict[str, Any], params: list[Any], first_param: int, document_id: str) -> str:
    """`match` over a document's chunks: it contains a text when one of its chunks does, and does not when
    none does. A document with no chunks (queued, processing, failed, empty) matches no condition, as a
    metadata key it lacks: its text is unknown, and `$not_contains` must not select (delete) it."""

    chunks = f"SELECT FROM chunks t WHERE t.document_id = {document_id}"

    def contains(param: str) -> str:
        return f"EXISTS ({chunks} AND strpos(t.text, {param}::text) > 0)"

    return f"(EXISTS ({chunks}) AND {text_clause(match, params, first_param, contains)})"
