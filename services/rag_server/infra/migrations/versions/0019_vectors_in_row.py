"""Vectors kept in their row: `chunks.embedding` and `chunk_vectors.embedding` get storage MAIN.

pgvector's type has storage EXTERNAL: a row over ~2 kB (a chunk's row always is: its text, its
search_text and a 384-d vector) stores the vector out of line, in the TOAST table. An exact scan, the
vector leg's recheck of a weak HNSW answer, then reads each vector through the TOAST index: 44.5 ms for
20k rows and 235 ms for 100k, against 11.8 and 64 ms with the vector in the row
(reports/hnsw/vector_storage_study.py). With MAIN the text columns are compressed and moved out first; a
vector leaves its row only when the row would still not fit in a page.

SET STORAGE applies to rows written from now on. The rows already there are rewritten here (CLUSTER on
the primary key: the table is locked and its indexes rebuilt) while the table holds at most
`RAG_VECTOR_RECHECK_MAX_CHUNKS` rows, the tables the recheck scans. A larger table keeps its layout until
an operator runs `VACUUM FULL chunks` (docs/operations.md); the migration logs that.

Revision ID: 0019_vectors_in_row
Revises: 0018_import_fingerprint
"""

from __future__ import annotations

import logging

from rag_server.infra.migrations.helpers import execute_sql, migration_settings, scalar

revision = "0019_vectors_in_row"
down_revision = "0018_import_fingerprint"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)

# table -> the index CLUSTER orders it by (any would do: the point is the rewrite).
TABLES = {"chunks": "chunks_pkey", "chunk_vectors": "chunk_vectors_pkey"}


def upgrade() -> None:
    bound = migration_settings().vector_recheck_max_chunks
    for table, index in TABLES.items():
        execute_sql(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE MAIN")
        rows = int(scalar(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {bound + 1}) AS sized"))
        if rows > bound:
            log.warning(
                "%s holds more than %d rows: its existing vectors stay out of line until `VACUUM FULL %s`"
                " (docs/operations.md)",
                table,
                bound,
                table,
            )
        elif rows:
            execute_sql(f"CLUSTER {table} USING {index}")
            execute_sql(f"ALTER TABLE {table} SET WITHOUT CLUSTER")


def downgrade() -> None:
    # The type's own storage; rows keep their layout (either reads the same).
    for table in TABLES:
        execute_sql(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE EXTERNAL")
