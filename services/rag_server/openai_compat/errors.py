"""OpenAI's error bodies, as /v1 answers them: every error (`error_content`), pydantic's refusals as a 400
naming the field (`validation_error_content`), and the 404s of a URL no /v1 route has."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """Every error a /v1 route answers (OpenAI's shape, which its clients parse)."""

    error: OpenAIErrorBody


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    503: ("server_error", None),
}


def error_content(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind, code = _ERROR_TYPES.get(status, ("invalid_request_error" if status < 500 else "server_error", None))
    return OpenAIError(error=OpenAIErrorBody(message=message, type=kind, param=param, code=code)).model_dump()


OPERATIONS = (
    "GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions, POST /v1/responses, "
    "GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items and POST /v1/embeddings"
)


def unknown_url_content(method: str, path: str) -> dict[str, Any]:
    """A 404 for a path no /v1 route has (`client.completions`, `client.images`...): not
    `model_not_found`, which made the SDK's NotFoundError blame the model."""
    message = f"Invalid URL ({method} {path}): this server's OpenAI-compatible API serves {OPERATIONS}"
    body = OpenAIErrorBody(message=message, type="invalid_request_error", param=None, code=None)
    return OpenAIError(error=body).model_dump()


# The paths OpenAI's clients build for the operations above (and `client.responses`, `client.completions`)
# from a base_url that lacks /v1.
_OPERATIONS_OUTSIDE_V1 = re.compile(r"^/(models(/.*)?|chat/completions|embeddings|responses|completions)$")


def is_openai_operation_outside_v1(path: str) -> bool:
    return _OPERATIONS_OUTSIDE_V1.match(path) is not None


def missing_v1_content(method: str, path: str) -> dict[str, Any]:
    """A 404 for an OpenAI client whose base_url lacks /v1: in OpenAI's shape (openai 3.x shows only
    `error.message`) and the REST API's (`detail`), saying where the API is."""
    message = (
        f"Invalid URL ({method} {path}): this server's OpenAI-compatible API is under /v1 "
        f"({method} /v1{path}): end the client's base_url with /v1"
    )
    body = OpenAIErrorBody(message=message, type="invalid_request_error", param=None, code=None)
    return {**OpenAIError(error=body).model_dump(), "detail": message}


_FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")
# Pydantic names the member of a union that failed ("str", "list[TextPart]", "function-after[...]")
# in an error's location: the field path ends before it.
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict"}


def _field_path(loc: Sequence[Any]) -> list[str]:
    path: list[str] = []
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, str) and (not _FIELD.match(part) or part in _UNION_TAGS):
            break
        path.append(str(part))
    return path


def validation_error_content(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """A 400 body for pydantic's errors: the first one's field and message (OpenAI names one `param`)."""
    first: dict[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":  # its location is a character offset, not a parameter
        error = (first.get("ctx") or {}).get("error")
        return error_content(400, "the body is not valid JSON" + (f": {error}" if error else ""), None)
    param = ".".join(_field_path(first.get("loc", ()))) or None
    said = str(first.get("msg"))
    message = f"{param}: {said}" if param else said
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return error_content(400, message, param)
