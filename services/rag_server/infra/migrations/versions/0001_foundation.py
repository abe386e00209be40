"""Foundation schema: documents, chunks (one table, HNSW), ingestion jobs, chat, pgmq queue.

Revision ID: 0001_foundation
Revises:
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql, migration_settings, scalar, set_meta_sql
from rag_server.infra.queue import install_pgmq

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    settings = migration_settings()
    dim = int(settings.embedding_dim)
    if not 1 <= dim <= 16000:
        raise ValueError(f"RAG_EMBEDDING_DIM must be between 1 and 16000, got {dim}")

    execute_sql("CREATE EXTENSION IF NOT EXISTS vector")
    if scalar("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_search'"):
        execute_sql("CREATE EXTENSION IF NOT EXISTS pg_search")

    execute_sql(
        f"""
        CREATE TABLE app_meta (
            key        text PRIMARY KEY,
            value      jsonb NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE documents (
            id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            filename     text NOT NULL,
            file_type    text NOT NULL,
            content_type text NOT NULL,
            size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
            sha256       text NOT NULL UNIQUE CHECK (sha256 ~ '^[0-9a-f]{{64}}$'),
            status       text NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'processing', 'ready', 'failed')),
            error        text,
            chunk_count  integer NOT NULL DEFAULT 0,
            metadata     jsonb NOT NULL DEFAULT '{{}}',
            created_at   timestamptz NOT NULL DEFAULT now(),
            updated_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX documents_created_at_idx ON documents (created_at);
        CREATE INDEX documents_filename_idx ON documents (lower(filename));

        -- The original bytes live in Postgres so a worker on another host needs no shared disk.
        CREATE TABLE document_files (
            document_id uuid PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
            content     bytea NOT NULL
        );

        -- The ONE table both retrievers search. search_text (title context + text) is what is
        -- embedded and BM25-indexed; text is what a user is shown.
        CREATE TABLE chunks (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
            chunk_index integer NOT NULL CHECK (chunk_index >= 0),
            text        text NOT NULL,
            search_text text NOT NULL,
            embedding   vector({dim}) NOT NULL,
            page        integer,
            char_start  integer,
            char_end    integer,
            metadata    jsonb NOT NULL DEFAULT '{{}}',
            created_at  timestamptz NOT NULL DEFAULT now(),
            UNIQUE (document_id, chunk_index)
        );
        CREATE INDEX chunks_embedding_hnsw_idx ON chunks
            USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);

        CREATE TABLE job_batches (
            id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE job_tasks (
            id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            batch_id         uuid NOT NULL REFERENCES job_batches (id) ON DELETE CASCADE,
            document_id      uuid REFERENCES documents (id) ON DELETE SET NULL,
            filename         text NOT NULL,
            status           text NOT NULL DEFAULT 'queued'
                             CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'duplicate')),
            total_chunks     integer NOT NULL DEFAULT 0,
            completed_chunks integer NOT NULL DEFAULT 0,
            attempts         integer NOT NULL DEFAULT 0,
            error            text,
            msg_id           bigint,
            created_at       timestamptz NOT NULL DEFAULT now(),
            updated_at       timestamptz NOT NULL DEFAULT now(),
            started_at       timestamptz,
            finished_at      timestamptz
        );
        CREATE INDEX job_tasks_batch_idx ON job_tasks (batch_id);
        CREATE INDEX job_tasks_document_idx ON job_tasks (document_id);

        CREATE TABLE chat_sessions (
            id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            title        text,
            llm_model    text,
            search_type  text NOT NULL DEFAULT 'hybrid' CHECK (search_type IN ('vector', 'bm25', 'hybrid')),
            is_archived  boolean NOT NULL DEFAULT false,
            is_temporary boolean NOT NULL DEFAULT false,
            created_at   timestamptz NOT NULL DEFAULT now(),
            updated_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX chat_sessions_updated_idx ON chat_sessions (updated_at DESC);

        CREATE TABLE chat_messages (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            session_id uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
            role       text NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content    text NOT NULL,
            metadata   jsonb NOT NULL DEFAULT '{{}}',
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX chat_messages_session_idx ON chat_messages (session_id, id);
        """
    )

    pgmq_install = install_pgmq()
    execute_sql("SELECT pgmq.create(%s)", (settings.queue_name,))

    meta = {
        "embedding_model": settings.embedding_model,
        "embedding_dim": dim,
        "pgmq_install": pgmq_install,
        "queue_name": settings.queue_name,
    }
    for key, value in meta.items():
        set_meta_sql(key, value)


def downgrade() -> None:
    queue = scalar("SELECT value #>> '{}' FROM app_meta WHERE key = 'queue_name'")
    if queue:
        execute_sql("SELECT pgmq.drop_queue(%s)", (queue,))
    execute_sql(
        """
        DROP TABLE chat_messages, chat_sessions, job_tasks, job_batches,
                   chunks, document_files, documents, app_meta;
        """
    )
