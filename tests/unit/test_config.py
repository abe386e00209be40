from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from rag_server.config import Settings
from rag_server.infra.database import plain_url, sqlalchemy_url, with_database


def test_database_url_comes_from_plain_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/rag")
    monkeypatch.setenv("RAG_DATA_DIR", "/srv/rag")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "postgresql://u:p@db:5432/rag"
    assert str(settings.embedded_pgdata) == "/srv/rag/pg"


def test_database_url_unset_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("RAG_DATABASE_URL", raising=False)
    assert Settings(_env_file=None).database_url is None  # type: ignore[call-arg]


def test_queue_name_must_be_an_identifier() -> None:
    with pytest.raises(ValidationError):
        Settings(queue_name="bad-name; drop")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+asyncpg://u@h/db", "postgresql://u@h/db"),
        ("postgres://u@h/db", "postgresql://u@h/db"),
        ("postgresql+psycopg://u:p@/db?host=/tmp/s", "postgresql://u:p@/db?host=/tmp/s"),
    ],
)
def test_plain_url_strips_driver(url: str, expected: str) -> None:
    assert plain_url(url) == expected


def test_plain_url_rejects_other_databases() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        plain_url("mysql://u@h/db")


def test_url_helpers_keep_socket_host() -> None:
    url = "postgresql://postgres:@/postgres?host=/tmp/x"
    assert with_database(url, "eval_1") == "postgresql://postgres:@/eval_1?host=/tmp/x"
    assert sqlalchemy_url(url) == "postgresql+psycopg://postgres:@/postgres?host=/tmp/x"


def test_embedded_server_memory_follows_the_machine() -> None:
    from rag_server.infra.embedded_postgres import server_settings

    gib = 2**30
    assert server_settings(24 * gib)["shared_buffers"] == "4096MB"  # capped
    assert server_settings(8 * gib)["shared_buffers"] == "2048MB"  # a quarter of RAM
    assert server_settings(256 * 2**20)["shared_buffers"] == "128MB"  # never below the default
    assert server_settings(8 * gib)["effective_cache_size"] == "4096MB"


@pytest.mark.parametrize("update", [{"embedding_runtime": "torch"}, {"embedding_provider": "ollama"}])
def test_int8_precision_needs_the_local_onnx_model(update: dict[str, str]) -> None:
    assert Settings(embedding_precision="int8").embedding_precision == "int8"
    assert Settings(embedding_precision="fp32", **update).embedding_precision == "fp32"  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="RAG_EMBEDDING_PRECISION=int8 applies to the local model"):
        Settings(embedding_precision="int8", **update)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(embedding_precision="fp16")  # type: ignore[arg-type]


@pytest.mark.parametrize("update", [{"embedding_runtime": "torch"}, {"embedding_provider": "ollama"}])
def test_queries_are_embedded_at_int8_only_where_the_local_onnx_model_runs(
    update: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).parent)  # no developer .env
    for name in ("PROVIDER", "RUNTIME", "PRECISION", "QUERY_PRECISION"):
        monkeypatch.delenv(f"RAG_EMBEDDING_{name}", raising=False)
    assert Settings().query_precision == "int8"  # the default: the local model on ONNX Runtime
    assert Settings(embedding_query_precision="fp32").query_precision == "fp32"
    assert Settings(embedding_precision="int8", embedding_query_precision="fp32").query_precision == "fp32"
    # Elsewhere "auto" follows the documents' precision, and int8 asked for is a configuration error.
    assert Settings(**update).query_precision == "fp32"  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="RAG_EMBEDDING_QUERY_PRECISION=int8 applies to the local"):
        Settings(embedding_query_precision="int8", **update)  # type: ignore[arg-type]


def test_a_worker_runs_two_tasks_at_once_by_default() -> None:
    # One slot leaves the model idle during each task's parsing and database round trips.
    assert Settings(_env_file=None).worker_concurrency == 2  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(worker_concurrency=0)


def test_every_setting_is_documented_in_env_example() -> None:
    text = (Path(__file__).parents[2] / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))
    missing = [
        name
        for name in Settings.model_fields
        if f"RAG_{name.upper()}" not in documented and name.upper() not in documented
    ]
    assert not missing, f"settings missing from .env.example: {missing}"
