"""Per-collection search settings: the convex fusion weight a collection is searched with.

`collections.hybrid_alpha` is the weight of the vector leg in convex fusion (alpha * vector +
(1 - alpha) * BM25, both min-max normalised) for searches of this collection that do not give one;
NULL means the server's RAG_HYBRID_ALPHA. `rag-server eval --tune` writes it from labelled queries;
PATCH /collections/{id} sets or clears it. double precision, not real: 0.35 reads back as 0.35.

Revision ID: 0013_collection_search_settings
Revises: 0012_document_versions
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0013_collection_search_settings"
down_revision = "0012_document_versions"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE collections
    ADD COLUMN hybrid_alpha double precision
        CONSTRAINT collections_hybrid_alpha_range CHECK (hybrid_alpha >= 0 AND hybrid_alpha <= 1);
COMMENT ON COLUMN collections.hybrid_alpha IS
    'convex fusion weight of the vector leg for this collection; NULL: RAG_HYBRID_ALPHA';
"""

DOWNGRADE = """
ALTER TABLE collections DROP COLUMN hybrid_alpha;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
