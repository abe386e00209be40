"""Every `code` a domain error carries is declared in the OpenAPI error schema (api/errors.ErrorCode): a
client that reads the schema knows every code it may meet."""

from __future__ import annotations

from typing import get_args

from rag_server import errors
from rag_server.api.errors import ErrorCode


def _subclasses(cls: type) -> list[type]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


def test_every_domain_error_code_is_declared() -> None:
    domain = [
        value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)
    ]
    codes = {code for base in domain for cls in _subclasses(base) if (code := getattr(cls, "code", None))}
    assert codes == set(get_args(ErrorCode))
