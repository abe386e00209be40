from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from rag_server.config import ConfigError, Settings, env_name
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


def _example_values() -> dict[str, tuple[bool, str]]:
    """.env.example's variables: name -> (commented out, value)."""
    text = (Path(__file__).parents[2] / ".env.example").read_text()
    lines = re.findall(r"^(# ?)?([A-Z][A-Z0-9_]*)=(.*)$", text, re.MULTILINE)
    return {name: (bool(comment), value) for comment, name, value in lines}


def test_every_variable_in_env_example_is_a_setting_with_that_default() -> None:
    fields = {env_name(name): name for name in Settings.model_fields}
    wrong = []
    for variable, (commented, value) in _example_values().items():
        if variable not in fields:
            # A commented line may name a variable of another program in an example value.
            assert commented and "=" not in variable, f".env.example names no setting: {variable}"
            continue
        if commented:  # an example value; the default is unset (None) or off
            continue
        name = fields[variable]
        read = Settings.model_validate({name: value}).model_dump()[name]
        if read != Settings.model_fields[name].get_default():
            wrong.append(f"{variable}={value} (default {Settings.model_fields[name].get_default()!r})")
    assert not wrong, f".env.example gives values that are not the defaults: {wrong}"


def _rag_server(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") and k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "rag_server", *args],
        env={**clean, "RAG_DATA_DIR": str(tmp_path / "data"), **env},
        cwd=tmp_path,  # no developer .env
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"RAG_PORT": "abc"}, "RAG_PORT 'abc': input should be a valid integer"),
        ({"RAG_FUSION": "best"}, "RAG_FUSION 'best': input should be 'rrf' or 'convex'"),
        (
            {"RAG_CHUNK_INCLUDE_TITLE": "maybe"},
            "RAG_CHUNK_INCLUDE_TITLE 'maybe': input should be a valid boolean",
        ),
        # 99999 listened nowhere (uvicorn started, said nothing); a pool of 0 was asyncpg's traceback.
        ({"RAG_PORT": "99999"}, "RAG_PORT '99999': input should be less than or equal to 65535"),
        ({"RAG_DB_POOL_MAX": "0"}, "RAG_DB_POOL_MAX '0': input should be greater than or equal to 1"),
        (
            {"RAG_DB_POOL_MIN": "5", "RAG_DB_POOL_MAX": "2"},
            "RAG_DB_POOL_MIN (5) is more than RAG_DB_POOL_MAX (2)",
        ),
        (
            {"RAG_EMBEDDING_PRECISION": "int8", "RAG_EMBEDDING_RUNTIME": "torch"},
            "RAG_EMBEDDING_PRECISION=int8 applies to the local model on ONNX Runtime only",
        ),
        (
            {"RAG_BOOTSTRAP_ADMIN_KEY_FILE": "/nonexistent/key"},
            "RAG_BOOTSTRAP_ADMIN_KEY_FILE=/nonexistent/key: cannot read it",
        ),
        # Both were tracebacks out of the server's start-up; the second after a database of 768-d
        # vectors was made, which the right setting could then no longer use.
        (
            {"RAG_BOOTSTRAP_ADMIN_KEY": "short"},
            "RAG_BOOTSTRAP_ADMIN_KEY has 5 characters: a bootstrap admin key needs at least 32",
        ),
        (
            {"RAG_EMBEDDING_DIM": "768"},
            "RAG_EMBEDDING_DIM=768, but sentence-transformers/all-MiniLM-L6-v2 makes 384-d vectors",
        ),
    ],
)
def test_a_bad_setting_is_one_error_line_at_start_up(env: dict[str, str], said: str, tmp_path: Path) -> None:
    done = _rag_server(env, tmp_path, "serve", "--port", "1")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr  # one line
    assert done.stderr.startswith(f"error: {said}"), done.stderr
    assert not (tmp_path / "data").exists()  # refused before the database was started


def test_two_bad_settings_are_said_in_the_same_line(tmp_path: Path) -> None:
    done = _rag_server({"RAG_PORT": "abc", "RAG_HYBRID_ALPHA": "2"}, tmp_path, "doctor")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "RAG_PORT 'abc'" in done.stderr and "RAG_HYBRID_ALPHA '2'" in done.stderr


def test_an_unreadable_bootstrap_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"RAG_BOOTSTRAP_ADMIN_KEY_FILE=.*: cannot read it \(Is a directory\)"
    ):
        Settings(bootstrap_admin_key_file=tmp_path).bootstrap_key()
    key = tmp_path / "key"
    key.write_text(" k" * 20 + "\n")
    assert Settings(bootstrap_admin_key_file=key).bootstrap_key() == ("k " * 20).strip()


def test_a_key_file_this_user_may_not_read_names_the_user(tmp_path: Path) -> None:
    # In a container the secret keeps its host owner and mode: which uid tried is what to fix.
    key = tmp_path / "key"
    key.write_text("k" * 40)
    key.chmod(0o000)
    reader, writer = os.pipe()
    pid = os.fork()  # root reads any file: a forked child drops to another uid to try (and may not undo it)
    if pid == 0:
        try:
            if os.geteuid() == 0:
                os.setuid(1000)
            Settings(bootstrap_admin_key_file=key).bootstrap_key()
            os.write(writer, b"read it")
        except ConfigError as exc:
            os.write(writer, str(exc).encode())
        finally:
            os._exit(0)
    os.close(writer)
    answered, _, _ = select.select([reader], [], [], 30)
    said = os.read(reader, 4096).decode() if answered else "no answer in 30 s"
    if not answered:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    uid = 1000 if os.geteuid() == 0 else os.geteuid()
    assert said.endswith(f"cannot read it (Permission denied; this process runs as uid {uid})"), said


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["worker"], ["up", "--port", "1"]])
def test_a_local_model_that_is_not_installed_is_one_error_line(command: list[str], tmp_path: Path) -> None:
    # It was the ValueError's traceback out of the app's start-up (117 lines) or the worker's.
    done = _rag_server(
        {"RAG_EMBEDDING_MODEL": "nonexistent/model", "HF_HUB_OFFLINE": "1"}, tmp_path, *command
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (
        "error: embedding model 'nonexistent/model' is neither a local sentence-transformers directory nor "
        "in the Hugging Face cache; models are never downloaded"
    )
    assert not (tmp_path / "data").exists()  # before the database was started


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"DATABASE_URL": "mysql://u:secret@h/db"}, "DATABASE_URL is not a PostgreSQL URL"),
        ({"DATABASE_URL": "secret"}, "DATABASE_URL is not a PostgreSQL URL"),
        (
            {"RAG_READ_DATABASE_URLS": "postgresql://u@replica/db,secret@replica2"},
            "RAG_READ_DATABASE_URLS (URL 2) is not a PostgreSQL URL",
        ),
        ({"RAG_EMBEDDED_LISTEN": "garbage"}, "RAG_EMBEDDED_LISTEN must be host:port (e.g. 127.0.0.1:5433)"),
    ],
)
def test_a_bad_database_address_is_one_error_line_that_never_shows_the_url(
    env: dict[str, str], said: str, tmp_path: Path
) -> None:
    # It was a ValueError's traceback when the database was opened, quoting the URL (and its password).
    done = _rag_server(env, tmp_path, "doctor")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"error: {said}") and len(done.stderr.strip().splitlines()) == 1, (
        done.stderr
    )
    assert "secret" not in done.stderr


def test_postgres_urls_of_every_accepted_form_are_settings() -> None:
    settings = Settings(
        database_url="postgresql+asyncpg://u:p@h/db",
        read_database_urls="postgres://u@r1/db, postgresql://u@r2/db",
        embedded_listen="127.0.0.1:5433",
    )
    assert settings.read_replica_urls == ["postgres://u@r1/db", "postgresql://u@r2/db"]


def test_a_port_out_of_range_on_the_command_line_is_refused(tmp_path: Path) -> None:
    done = _rag_server({}, tmp_path, "serve", "--port", "70000")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        "error: argument --port: takes a whole number from 1 to 65535, got '70000'"
    )


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("", []),
        ("https://Chat.Example.com", ["https://chat.example.com"]),
        (" https://a.example , http://127.0.0.1:3000/ ", ["https://a.example", "http://127.0.0.1:3000"]),
        ("*", ["*"]),
        (
            "https://chat.example.com:443, http://a.example:80",
            ["https://chat.example.com", "http://a.example"],
        ),
        ("https://bücher.example", ["https://xn--bcher-kva.example"]),
        ("http://[::1]:8080", ["http://[::1]:8080"]),
    ],
)
def test_cors_origins_are_origins_as_browsers_send_them(value: str, origins: list[str]) -> None:
    assert Settings(_env_file=None, cors_origins=value).cors_origin_list == origins  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("chat.example.com", "is not an origin"),  # no scheme
        ("https://chat.example.com/app", "no path"),
        ("ftp://files.example", "is not an origin"),
        ("https://user:pw@chat.example.com", "scheme://host[:port] only"),
        ("https://chat.example.com:99999", "no valid host and port"),
        ("*, https://chat.example.com", "stands alone"),
    ],
)
def test_a_cors_origin_that_is_not_one_is_refused_naming_the_variable(value: str, says: str) -> None:
    with pytest.raises(ValidationError, match=f"RAG_CORS_ORIGINS.*{re.escape(says)}"):
        Settings(_env_file=None, cors_origins=value)  # type: ignore[call-arg]
