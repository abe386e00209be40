"""What the database commands share in reading their arguments: a bad one is said in one line, never a
traceback, and refused before any work.

`whole_number` is an argparse `type`: argparse refuses the value at parse time (its usage, then one
`error:` line; exit 2). `refusal` words pydantic's ValidationError (many lines and a link to pydantic's
site) as one line that says the rule the value breaks.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

# Errors whose message only repeats the constraint (a regex, a length): a field's description says the
# rule in words; without one a length is said plainly.
_RULE_ERRORS = {"string_pattern_mismatch", "string_too_long", "string_too_short", "too_long", "too_short"}


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse `type`: a whole number from `low` to `high`. Unbounded, a huge value reached the
    database as an asyncpg DataError (past int64), and a too small one was quietly replaced."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"takes a whole number from {low} to {high}, got {text!r}")
        return value

    return parse


def refusal(
    exc: ValidationError, model: type[BaseModel] | None = None, labels: Mapping[str, str] | None = None
) -> str:
    """`exc` (from validating `model`) as one line. `labels`: how the command line names each field
    (`--name`, `NAME`); a field's description, when it has one, is its rule in words."""
    said = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # the model's own check: its message is the whole sentence
            said.append(message)
            continue
        name = str(error["loc"][0])
        field = model.model_fields.get(name) if model is not None and len(error["loc"]) == 1 else None
        rule = None
        if error["type"] in _RULE_ERRORS:
            rule = (field.description if field is not None else None) or _length(error)
        value = error["input"]
        shown = repr(value[:30] + "..." if isinstance(value, str) and len(value) > 40 else value)
        label = (labels or {}).get(name, name)
        if len(error["loc"]) > 1 and isinstance(error["loc"][1], int):  # one value of a list: which one
            label += f" (value {error['loc'][1] + 1})"
        said.append(f"{label} {shown}: {_sentence_case(rule or message)}")
    return "; ".join(said)


def _length(error: Any) -> str | None:
    ctx, value = error.get("ctx") or {}, error["input"]
    unit = "characters" if isinstance(value, str) else "values"
    if "max_length" in ctx:
        return f"at most {ctx['max_length']} {unit}, not {len(value)}"
    if ctx.get("min_length") == 1:
        return "must not be empty"
    if "min_length" in ctx:
        return f"at least {ctx['min_length']} {unit}, not {len(value)}"
    return None


def _sentence_case(text: str) -> str:
    return (text[:1].lower() + text[1:]).rstrip(".")


# The values that name files: a file's name may be any bytes (Python keeps those that are not UTF-8 as
# surrogates, and gives them back to the system as they were).
FILE_ARGUMENTS = frozenset({"paths", "path", "file", "json", "report", "lock", "out", "data", "repo", "eval"})


def not_utf8(args: argparse.Namespace) -> str | None:
    """The first argument (its name) whose value is not UTF-8 text (typed in a terminal of another
    encoding): it failed deep in a command, as a traceback. None: every one is."""
    for name, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            if name not in FILE_ARGUMENTS and isinstance(item, str) and not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return name
    return None
