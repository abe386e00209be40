"""The documents' name filter folds Latin accents as the name order does: "ecole" finds "École d'été.txt".

`GET /documents?name=` (the web app's "Contains", `documents list --name`) matched the lowered name,
accents kept, while the name order (0033) folds them. Folding each name at the filter's every call costs
`rag_fold_accents` per accented name per listing: at 100,000 documents, one in twenty accented, a listing
filtered by name took 92 ms instead of 28 ms (embedded PostgreSQL 18, a shared 2-core machine), and more
the more names have accents. The folded, lowered name is kept instead, in a stored generated column,
`name_folded`, computed once per write: the filter reads it, no function per row. Same 100,000 documents:
16.5 ms per filtered listing (28-30 ms before, when the accents were kept).

The column's expression is 0033's fold of the name (`FOLDED_NAME`, read from 0033's file), lowered. Adding
it rewrites the table under an ACCESS EXCLUSIVE lock (the migration runs before the servers start): 1.0 s
at 100,000 documents (a quarter with accented names, a quarter Cyrillic), same machine.

The downgrade drops the column (0.04 s).

Revision ID: 0034_name_filter_folds_accents
Revises: 0033_name_order_folds_accents
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from rag_server.infra.migrations.helpers import execute_sql

revision = "0034_name_filter_folds_accents"
down_revision = "0033_name_order_folds_accents"
branch_labels = None
depends_on = None


def folded_name_sql() -> str:
    """0033's fold of a name (a length test, then `rag_fold_accents`), of `filename`, lowered."""
    path = Path(__file__).with_name("0033_name_order_folds_accents.py")
    spec = importlib.util.spec_from_file_location("_migration_0033", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    of_filename = re.sub(r"\bname\b", "filename", module.FOLDED_NAME)
    return f"lower({of_filename})"


def upgrade() -> None:
    execute_sql(
        f"""
ALTER TABLE documents ADD COLUMN name_folded text GENERATED ALWAYS AS ({folded_name_sql()}) STORED;
COMMENT ON COLUMN documents.name_folded IS
    'The name, Latin accents folded (rag_fold_accents) and lowered: the name filter of the listing';
"""
    )


def downgrade() -> None:
    execute_sql("ALTER TABLE documents DROP COLUMN name_folded;")
