"""Text as it may enter the system from outside: what PostgreSQL and UTF-8 can hold.

PostgreSQL `text` and `jsonb` cannot hold NUL (a query binding it fails with an error, i.e. a 500 for
what is only odd input), and a lone surrogate (valid in a JSON string escape, not in UTF-8) cannot be
encoded for the database, a tokenizer or the reply. Request models clean every free-text field with
`CleanText` where it enters, so nothing behind them has to think about it.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

# A JSON parser joins a valid escaped pair into one character: any surrogate left in a str is lone.
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """`value` with each NUL replaced by a space and each lone surrogate by U+FFFD; all else unchanged.

    Replaced, not dropped: the length stays the same, so a limit means the same before and after cleaning
    (the OpenAPI document's maxLength/minLength count what the client sent) and "\\x00" is not "".
    """
    if value.isascii():
        return value.replace("\x00", " ")
    return _SURROGATE.sub("\ufffd", value).replace("\x00", " ")


CleanText = Annotated[str, AfterValidator(clean_text)]
"""A `str` field whose value is passed through `clean_text`; use it for every free-text request field."""
