-- Runs once, on a fresh production cluster (ParadeDB image), before any migration.
-- Mounted at /docker-entrypoint-initdb.d/20-init.sql: after ParadeDB's own 10_bootstrap script.
-- Everything else (tables, indexes, the pgmq install and queue) is done by Alembic migrations.

CREATE EXTENSION IF NOT EXISTS vector;

-- pg_search ships with the ParadeDB image; on any other Postgres it is simply absent and the
-- native BM25 engine is used instead.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_search') THEN
        CREATE EXTENSION IF NOT EXISTS pg_search;
    END IF;
END
$$;
