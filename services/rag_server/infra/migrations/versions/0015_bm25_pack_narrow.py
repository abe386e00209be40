"""Narrow entries in the native BM25 pack (docs/decisions/0014-packed-postings.md, "Narrow entries").

`bm25_pack.narrow`: the pack's chunk ids are int4 and its tfs and lengths int2 (half of 0014's int8 and
int4), which a pack chooses whenever every value fits: a search reads and decodes half the bytes (1M
chunks: 4 ms of a query's 7 ms fetch). A pack built before this migration stays wide (false) until the
next one. Native engine only.

Revision ID: 0015_bm25_pack_narrow
Revises: 0014_bm25_packs
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql, scalar

revision = "0015_bm25_pack_narrow"
down_revision = "0014_bm25_packs"
branch_labels = None
depends_on = None

UPGRADE = "ALTER TABLE bm25_pack ADD COLUMN narrow boolean NOT NULL DEFAULT false"

# The code before this revision reads wide entries only: drop the pack, the next one rebuilds it.
DOWNGRADE = """
TRUNCATE bm25_packed, bm25_unpacked, bm25_pack;
ALTER TABLE bm25_pack DROP COLUMN narrow;
"""


def _native() -> bool:
    return bool(scalar("SELECT to_regclass('bm25_pack') IS NOT NULL"))


def upgrade() -> None:
    if _native():
        execute_sql(UPGRADE)


def downgrade() -> None:
    if _native():
        execute_sql(DOWNGRADE)
