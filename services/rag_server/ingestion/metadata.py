"""Document metadata as it enters from outside: a JSON object PostgreSQL's jsonb can hold, bounded.

One set of rules for every way in (the upload's `metadata` / `file_metadata` form fields, PATCH
/documents/{id}, the CLI): an object at the top, string keys of 1-200 characters, at most
MAX_METADATA_DEPTH levels of nesting, finite numbers (jsonb has no NaN or Infinity), text without a
lone surrogate (NUL becomes a space, as in every free-text field: `text.clean_text`), and at most
MAX_METADATA_BYTES once serialised. Anything else is an InvalidInputError whose message says which rule.
"""

from __future__ import annotations

import json
import math
from typing import Any

from rag_server.errors import InvalidInputError
from rag_server.text import clean_text

MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8
MAX_KEY_CHARS = 200


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number PostgreSQL can store")


def parse_metadata_json(raw: str, field: str) -> dict[str, Any]:
    """The form field's text parsed and checked (`field` names it in the error)."""
    if len(raw.encode("utf-8", "surrogatepass")) > 4 * MAX_METADATA_BYTES:
        raise InvalidInputError(f"{field}: over the limit of {MAX_METADATA_BYTES // 1024} KiB.")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidInputError(f"{field}: nested deeper than {MAX_METADATA_DEPTH} levels.") from None
    except ValueError as exc:
        raise InvalidInputError(f"{field} is not valid JSON: {exc}.") from None
    return check_metadata(value, field)


def check_metadata(value: Any, field: str = "metadata") -> dict[str, Any]:
    """`value` cleaned if it is a metadata object within the limits; else InvalidInputError."""
    if not isinstance(value, dict):
        raise InvalidInputError(f'{field} must be a JSON object, like {{"team": "x"}}.')
    try:
        cleaned: dict[str, Any] = _clean(value, 1, field)
    except ValueError as exc:
        raise InvalidInputError(f"{exc}.") from None
    size = len(json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidInputError(
            f"{field} is {size} bytes as JSON, over the limit of {MAX_METADATA_BYTES // 1024} KiB."
        )
    return cleaned


def _clean(value: Any, depth: int, where: str) -> Any:
    if isinstance(value, dict | list) and depth > MAX_METADATA_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
                raise ValueError(f"{where}: every key must be a string of 1 to {MAX_KEY_CHARS} characters")
            name = _text(key, where)
            out[name] = _clean(item, depth + 1, f"{where}.{name}")
        return out
    if isinstance(value, list):
        return [_clean(item, depth + 1, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, str):
        return _text(value, where)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value} is not a number PostgreSQL can store")
    if value is None or isinstance(value, bool | int | float):
        return value
    raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")


def _text(value: str, where: str) -> str:
    try:
        return clean_text(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def merge_metadata(request_wide: dict[str, Any], per_file: dict[str, Any] | None) -> dict[str, Any]:
    """A file's metadata: the request-wide object with the file's own keys on top (the file wins,
    key by key at the top level), within the size limit."""
    merged = {**request_wide, **(per_file or {})}
    return check_metadata(merged) if per_file else merged
