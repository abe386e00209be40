"""ParadeDB pg_search 0.26: the BM25 index is rebuilt keyless and with the chunk's collection.

0.26 deprecated `key_field` (a no-op with a WARNING; new indexes need neither a key field nor a
unique first column). Indexing `collection_id` lets pg_search push the collection scope
(`collection_id = ANY($n::uuid[])`) into the BM25 scan, so a scoped query's top k is taken inside
the collection instead of filtered afterwards. A ParadeDB index cannot be altered and a table holds
only one, so the index is dropped and built again (searches wait on the table lock meanwhile).
The native engine (the embedded database) has no such index: there this migration does nothing.

Revision ID: 0005_paradedb_026
Revises: 0004_access
"""

from __future__ import annotations

import re

from alembic import context

from rag_server.infra.migrations.helpers import execute_sql, scalar

revision = "0005_paradedb_026"
down_revision = "0004_access"
branch_labels = None
depends_on = None

INDEX_NAME = "chunks_bm25_idx"
# id first: pdb.score(id) and the `ORDER BY score, id` tie-break read it from the index (Top K).
# collection_id (uuid: a keyword, columnar field) makes the collection scope a pushed-down filter.
INDEX_FIELDS = ("id", "(search_text::pdb.simple('stemmer=english'))", "collection_id")


def bm25_index_sql(pg_search_version: str) -> str:
    """The chunks BM25 index for this pg_search version (what `paradedb.version_info()` reports).

    0.26+: no `key_field`. Before 0.26 the option was mandatory, so an index built by a 0.25 server
    (this app on the 0.25 image) still names it; 0.26 accepts and ignores it.
    """
    match = re.match(r"(\d+)\.(\d+)", pg_search_version)
    if match is None:
        raise ValueError(f"unrecognised pg_search version {pg_search_version!r}")
    keyless = (int(match[1]), int(match[2])) >= (0, 26)
    with_key = "" if keyless else "\n    WITH (key_field = 'id')"
    return f"CREATE INDEX {INDEX_NAME} ON chunks\n    USING paradedb ({', '.join(INDEX_FIELDS)}){with_key};\n"


def pg_search_engine() -> bool:
    """Whether migration 0002 chose pg_search for this database (recorded in app_meta)."""
    return scalar("SELECT value #>> '{}' FROM app_meta WHERE key = 'bm25_engine'") == "pg_search"


def upgrade() -> None:
    if not pg_search_engine():
        return
    # The library's version, not pg_extension's: the library builds the index, and the catalog lags
    # behind it until someone runs ALTER EXTENSION pg_search UPDATE after pulling a new image.
    version = str(scalar("SELECT version FROM paradedb.version_info()"))
    execute_sql(f"DROP INDEX IF EXISTS {INDEX_NAME};\n" + bm25_index_sql(version))


def downgrade() -> None:
    if not pg_search_engine():
        return
    v2 = context.script.get_revision("0002_bm25").module
    execute_sql(f"DROP INDEX IF EXISTS {INDEX_NAME};\n" + v2.PG_SEARCH_INDEX)
