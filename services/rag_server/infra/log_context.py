"""What a log line is about: the request id and the ingestion task id, bound per request or task.

ContextVars, so each request (its task and what it spawns) and each worker slot sees its own values;
the log formatter (infra/logs.py) reads them, and an upload stores the request id on its tasks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from uuid import uuid4

request_id_var: ContextVar[str | None] = ContextVar("rag_request_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("rag_task_id", default=None)

MAX_REQUEST_ID_CHARS = 128
# Visible ASCII only: no control characters (log injection), no spaces (the text format stays one
# token per field), nothing a header or a JSON string would need to escape beyond `"` and `\`.
_VALID_REQUEST_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID_CHARS}}}")


def new_request_id() -> str:
    return uuid4().hex


def valid_request_id(value: str | None) -> bool:
    return value is not None and _VALID_REQUEST_ID.fullmatch(value) is not None


def accept_request_id(value: str | None) -> str:
    """The client's id when it is usable, else a new one: a bad id is replaced, never refused."""
    return value if value is not None and valid_request_id(value) else new_request_id()


def current_request_id() -> str | None:
    return request_id_var.get()


def current_task_id() -> str | None:
    return task_id_var.get()


@contextmanager
def log_context(*, request_id: str | None = None, task_id: object | None = None) -> Iterator[None]:
    """Bind the request id and/or task id for the code inside (values left None stay as they are)."""
    tokens = []
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id)))
    if task_id is not None:
        tokens.append((task_id_var, task_id_var.set(str(task_id))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
