"""Sorting documents by name folds Latin accents: "Émile.pdf" sorts among the E's, "école" with "ecole".

0022's key (`rag_name_key`) lowers the name and is compared byte by byte (COLLATE "C", its docstring says
why): every letter with an accent is bytes above ASCII's, so "Émile.pdf" came after "Zeta.pdf" and
"école.pdf" after "zoo.pdf". The key now folds the name first, with `rag_fold_accents(text)`: 0027's
folding of BM25 text, built from 0027's tables of letters (imported, not copied): a Latin letter with an
accent, cedilla, umlaut, ring, caron, stroke... becomes its base letter, a few become two (ß -> ss, æ ->
ae, œ -> oe, þ -> th), ø -> o, ł -> l, đ -> d, and a combining mark after a Latin letter is dropped. Then,
as before, it is lowered and its digit runs keyed. "école" and "ecole" get one key: they tie, and the
listing breaks ties by id as it always did. Still a key, not a collation (0022: the embedded server has no
ICU, and a libc collation is not the same on both servers).

Nothing else moves: a name without such a letter or mark keeps its key byte for byte (the function hands
it back after a length test, and for a name that is not ASCII one regular expression), so digits stay
natural, case stays ignored, and Cyrillic, Greek and CJK names keep their order among themselves (their
letters and their marks are not folded; names are stored composed, NFC, which the fold's decomposition
and composition give back unchanged).

It stays IMMUTABLE and cheap. CPU time of `rag_name_key` a name (100,000 names of 37-54 characters each
kind, the server process's CPU time, embedded PostgreSQL 18 on a shared 2-core machine): 14.0-14.3 us
before for every kind (0022 measured 16 us); after, ASCII names 14.7 us (rag_name_key does not call the
fold for them), Cyrillic and CJK names 19.7 us (one call of the fold and its regular expression), names
with accented letters 33.4 us (`rag_fold_accents` alone: 17.9 us for those, 4.2 us the call of it).

The column is recomputed by `ALTER TABLE documents ALTER COLUMN name_key SET EXPRESSION` (PostgreSQL 17
on; ParadeDB's image and the embedded server are 18; an older server is refused before any migration),
with the same expression: it rewrites the table and its indexes under an ACCESS EXCLUSIVE lock and leaves
no dead row versions (an UPDATE would write a new version of every row and leave the old ones to vacuum);
the column's statistics, which the rewrite drops, are gathered again at once (ANALYZE of that column:
0.06-0.09 s). 100,000 documents (half with ASCII names, a quarter accented, a quarter Cyrillic and CJK),
same machine: the upgrade 3.3-3.8 s (2.5 s of CPU; the same rewrite keeping 0022's key takes 2.1-2.6 s),
the downgrade about 2.5 s (a whole Alembic run, the process's start included: 4.1 s up, 2.9-3.4 s down);
the table is locked meanwhile (the migration runs before the servers start).

The downgrade puts back 0022's function (its text, read from 0022's file), recomputes the column again and
drops `rag_fold_accents`.

Revision ID: 0033_name_order_folds_accents
Revises: 0032_chat_search_per_owner
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from rag_server.infra.migrations.helpers import execute_sql

revision = "0033_name_order_folds_accents"
down_revision = "0032_chat_search_per_owner"
branch_labels = None
depends_on = None


def _landed(revision_id: str) -> ModuleType:
    """A landed migration's module, loaded from its file beside this one: no Alembic context needed (tests
    record the statements of an upgrade without one)."""
    spec = importlib.util.spec_from_file_location(revision_id, Path(__file__).with_name(f"{revision_id}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def name_key_0022() -> str:
    """0022's `CREATE FUNCTION rag_name_key ... END;`, as it stands in 0022's script."""
    script: str = _landed("0022_activity_and_name_order").UPGRADE
    start = script.index("CREATE FUNCTION rag_name_key(")
    return script[start : script.index("\nEND;\n", start) + len("\nEND;")]


def fold_function_sql() -> str:
    """`rag_fold_accents`: 0027's fold (`fold_sql`), behind 0027's quick tests: ASCII (a length test) and a
    text holding no folded letter nor combining mark are handed back as they are. A SQL-standard body, as
    0022's: its built-ins are bound at creation (a generated column's expression runs under a restore's
    empty search_path too)."""
    v27 = _landed("0027_bm25_ascii_folding")
    return f"""
CREATE FUNCTION rag_fold_accents(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE WHEN octet_length(t) = char_length(t) OR t !~ '[{v27.FOLD_CLASS}{v27.MARKS}]' THEN t
                ELSE {v27.fold_sql("t")} END;
END;
COMMENT ON FUNCTION rag_fold_accents(text) IS
    'Latin accents folded as BM25 folds them (0027: é -> e, ß -> ss, Ø -> O), composed (NFC): rag_name_key';
"""


# The name folded before it is lowered. An ASCII name (most) is not handed to rag_fold_accents at all: the
# call of a second SQL function from this one costs about 4 us, a third of the key's own cost.
FOLDED_NAME = "CASE WHEN octet_length(name) = char_length(name) THEN name ELSE rag_fold_accents(name) END"


def name_key_sql() -> str:
    """0022's function, folding the name before lowering it."""
    previous = name_key_0022()
    assert previous.count("lower(name)") == 1, previous
    return previous.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1).replace(
        "lower(name)", f"lower({FOLDED_NAME})"
    )


# Same expression: PostgreSQL computes every row's key again (a rewrite of the table and its indexes). It
# drops the column's statistics too, and a rewrite does not bring autovacuum's analyze: gathered again here
# (0.06-0.09 s at 100,000 documents), so the planner keeps costing the listing's index scan as before.
RECOMPUTE = """
ALTER TABLE documents ALTER COLUMN name_key SET EXPRESSION AS (rag_name_key(filename));
ANALYZE documents (name_key);
"""


def upgrade() -> None:
    execute_sql(fold_function_sql() + name_key_sql() + RECOMPUTE)


def downgrade() -> None:
    restored = name_key_0022().replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    execute_sql(f"{restored}\n{RECOMPUTE}\nDROP FUNCTION rag_fold_accents(text);")
