"""The ParadeDB (pg_search 0.26.x) index and statement. pg_search cannot run here, so we check what we
generate, and compare it with what the official `sqlalchemy-paradedb` (0.13, for pg_search 0.26.2+)
compiles for the same index and the same query."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import ModuleType, SimpleNamespace
from typing import Any
from unittest import mock
from uuid import UUID

import pytest
from alembic.script import ScriptDirectory
from paradedb.sqlalchemy import indexing, pdb, search, tokenizer
from sqlalchemy import BigInteger, Column, Index, MetaData, Table, Text, any_, bindparam, desc, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.schema import CreateIndex

from rag_server.infra.migrations import MIGRATIONS_DIR
from rag_server.retrieval.bm25 import pg_search_statement
from rag_server.retrieval.filters import LegFilters
from rag_server.retrieval.models import SearchFilters

HOSTILE = '\'; DROP TABLE chunks; -- title:"x" (a OR b) +c -d 🚀'
SCOPE = [UUID("00000000-0000-0000-0000-000000000001"), UUID("00000000-0000-0000-0000-0000000000aa")]


def scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


def migration_0005() -> ModuleType:
    """The pg_search 0.26 migration, found by its name: its number changes when migrations merge."""
    [script] = [s for s in scripts().walk_revisions() if s.revision.endswith("_paradedb_026")]
    return script.module


def migration_0027() -> ModuleType:
    """The folding migration (the index's tokenizer with `ascii_folding`), found by its name."""
    [script] = [s for s in scripts().walk_revisions() if s.revision.endswith("_bm25_ascii_folding")]
    return script.module


# --- the official integration's side: the same table, index and query, compiled with its constructs ---

CHUNKS = Table(
    "chunks",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("search_text", Text),
    Column("collection_id", PG_UUID(as_uuid=True)),
)


STEMMED = tokenizer.simple(options={"stemmer": "english"})
# 0027: the same tokenizer with Lucene's ASCII folding (ParadeDB's docs: "token filters", "ASCII folding").
FOLDED = tokenizer.simple(options={"stemmer": "english", "ascii_folding": True})


def official_index_sql(text_tokenizer: tokenizer.Tokenizer = STEMMED) -> str:
    index = Index(
        "chunks_bm25_idx",
        indexing.ParadeDBField(CHUNKS.c.id),
        indexing.ParadeDBField(CHUNKS.c.search_text, tokenizer=text_tokenizer),
        indexing.ParadeDBField(CHUNKS.c.collection_id),
        postgresql_using="paradedb",
    )
    indexing.validate_paradedb_index(index)
    return str(CreateIndex(index).compile(dialect=postgresql.dialect()))


def official_statement() -> Any:
    c = CHUNKS.alias("c")
    score = pdb.score(c.c.id)
    return (
        select(c.c.id.label("chunk_id"), score.label("score"))
        .where(
            search.match_any(c.c.search_text, bindparam("query", type_=Text)),
            c.c.collection_id == any_(bindparam("collections", type_=ARRAY(PG_UUID(as_uuid=True)))),
        )
        .order_by(desc(score), c.c.id)
        .limit(bindparam("top_k"))
    )


# --- normalising both sides: whitespace, parentheses, parameter style ---


@dataclass(frozen=True)
class IndexDef:
    name: str
    table: str
    method: str
    fields: tuple[str, ...]
    options: dict[str, str]


def balanced_end(text: str, open_at: int) -> int:
    """Index of the parenthesis closing the one at `open_at` (quotes are respected)."""
    depth, quoted = 0, False
    for i in range(open_at, len(text)):
        ch = text[i]
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in {text!r}")


def split_top_level(text: str) -> list[str]:
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "()":
            depth += 1 if ch == "(" else -1
        elif not quoted and depth == 0 and ch == ",":
            parts.append(text[start:i])
            start = i + 1
    return [p.strip() for p in [*parts, text[start:]] if p.strip()]


def normalise_field(field: str) -> str:
    """`((search_text)::pdb.simple('stemmer=english'))` and `(search_text::pdb.simple(...))` are one
    field: PostgreSQL needs the outer parentheses around any expression, the inner ones are noise."""
    field = field.strip()
    while field.startswith("(") and balanced_end(field, 0) == len(field) - 1:
        field = field[1:-1].strip()
    # `pdb.simple('a', 'b')` and `pdb.simple('a','b')`: spaces between a tokenizer's quoted arguments.
    field = re.sub(r"',\s+'", "','", field)
    return re.sub(r"\((\w+)\)::", r"\1::", field)


def parse_index(sql: str) -> IndexDef:
    sql = " ".join(sql.split()).rstrip(";").strip()
    head = re.match(r"CREATE INDEX (\w+) ON (\w+) USING (\w+) \(", sql)
    assert head, sql
    close = balanced_end(sql, head.end() - 1)
    fields = tuple(normalise_field(f) for f in split_top_level(sql[head.end() : close]))
    rest = sql[close + 1 :].strip()
    options: dict[str, str] = {}
    if rest:
        with_clause = re.fullmatch(r"WITH \((.*)\)", rest)
        assert with_clause, rest
        for option in split_top_level(with_clause[1]):
            key, value = (s.strip() for s in option.split("=", 1))
            options[key] = value.strip("'")
    return IndexDef(head[1], head[2], head[3].lower(), fields, options)


@dataclass(frozen=True)
class Query:
    select: str
    source: str
    where: frozenset[str]
    order_by: str
    limit: str


def parse_query(sql: str, names: list[str]) -> Query:
    """One flat SELECT, `$n` replaced by its parameter's name, in lower case with single spaces."""
    sql = re.sub(r"\$(\d+)", lambda m: f":{names[int(m[1]) - 1]}", sql)
    sql = " ".join(sql.lower().split()).replace("any (", "any(")
    # Why these may differ: SQLAlchemy's asyncpg dialect casts a Text bind to varchar, which
    # PostgreSQL coerces to text; we cast to text ourselves because `|||` is overloaded.
    sql = re.sub(r"(:\w+)::(?:varchar|text)\b", r"\1", sql)
    parts = re.fullmatch(r"select (.*) from (.*) where (.*) order by (.*) limit (.*)", sql)
    assert parts, sql
    # `chunks c` and `chunks as c` are the same alias.
    source = re.sub(r"\bas (\w+)$", r"\1", parts[2].strip())
    return Query(parts[1], source, frozenset(w.strip() for w in parts[3].split(" and ")), parts[4], parts[5])


# --- the index ---


def test_index_is_what_sqlalchemy_paradedb_compiles_for_026() -> None:
    ours = parse_index(migration_0005().bm25_index_sql("0.26.2"))
    theirs = parse_index(official_index_sql())
    assert ours == theirs
    # Spelled out: the access method, the fields in order (id first, the stemmed text, the collection),
    # and no `key_field` (deprecated and ignored since 0.26.0; the integration cannot even express it).
    assert ours.method == "paradedb"
    assert ours.fields == ("id", "search_text::pdb.simple('stemmer=english')", "collection_id")
    assert ours.options == {}


@pytest.mark.parametrize("version", ["0.26.0", "0.26.2", "0.26.0-rc.1", "0.27.1", "1.0.0"])
def test_index_is_keyless_from_026(version: str) -> None:
    sql = migration_0005().bm25_index_sql(version)
    assert "key_field" not in sql
    assert parse_index(sql) == parse_index(official_index_sql())


@pytest.mark.parametrize("version", ["0.25.3", "0.24.2"])
def test_index_before_026_differs_only_by_the_then_mandatory_key_field(version: str) -> None:
    old = parse_index(migration_0005().bm25_index_sql(version))
    assert old.options == {"key_field": "id"}
    assert replace(old, options={}) == parse_index(official_index_sql())


def test_an_unrecognised_version_is_refused() -> None:
    with pytest.raises(ValueError, match="unrecognised pg_search version"):
        migration_0005().bm25_index_sql("latest")


def test_0002s_index_was_the_025_one_without_the_collection() -> None:
    """What 0005's downgrade restores: key_field, and no collection_id (nothing to push the scope to)."""
    v2 = parse_index(scripts().get_revision("0002_bm25").module.PG_SEARCH_INDEX)
    assert v2.options == {"key_field": "id"}
    assert v2.fields == ("id", "search_text::pdb.simple('stemmer=english')")


# --- the query ---


def test_query_is_what_sqlalchemy_paradedb_compiles_for_the_same_search() -> None:
    sql, params = pg_search_statement("heart attack", 7, None, SCOPE)
    assert params == ["heart attack", 7, SCOPE]
    ours = parse_query(sql, ["query", "top_k", "collections"])

    statement = official_statement()
    compiled = statement.compile(dialect=asyncpg_dialect())
    theirs = parse_query(str(compiled), list(compiled.positiontup or []))

    expected_where = {
        "c.search_text ||| :query",  # match disjunction: any token, the index's own tokenizer
        "c.collection_id = any(:collections::uuid[])",  # the scope, a pushed-down filter
    }
    assert ours.where == theirs.where == expected_where
    assert ours.order_by == theirs.order_by == "pdb.score(c.id) desc, c.id"
    assert ours.limit == theirs.limit == ":top_k"
    assert ours.source == theirs.source == "chunks c"
    # We cast the score (float4) to float8 for the driver; the same pdb.score(c.id) otherwise.
    expected_select = "c.id as chunk_id, pdb.score(c.id) as score"
    assert ours.select.replace("::float8", "") == theirs.select == expected_select
    # The integration's own static check: a ParadeDB predicate, ORDER BY with LIMIT (Top K).
    assert indexing.validate_pushdown(statement) == []


def test_the_scope_and_the_tie_break_are_index_fields_so_they_push_down() -> None:
    """ParadeDB pushes `=`/`ANY` on an indexed uuid into the scan; Top K needs every ORDER BY column
    indexed. Cross-check the query against the index the migration builds."""
    fields = parse_index(migration_0005().bm25_index_sql("0.26.2")).fields
    sql, _ = pg_search_statement("heart attack", 7, None, SCOPE)
    query = parse_query(sql, ["query", "top_k", "collections"])
    scope_column = next(w for w in query.where if "any(" in w).split(" = ")[0].removeprefix("c.")
    assert scope_column in fields
    assert query.order_by.split(", ")[-1].removeprefix("c.") in fields


def test_pg_search_uses_match_any_operator_and_score_with_bound_text() -> None:
    sql, params = pg_search_statement(HOSTILE, 7)
    assert "c.search_text ||| $1::text" in sql
    assert "pdb.score(c.id)" in sql
    assert re.search(r"ORDER BY pdb\.score\(c\.id\) DESC, c\.id\s+LIMIT \$2", sql)
    assert params == [HOSTILE, 7]
    # User text is bound, never part of the statement; no query-parser entry points are used.
    assert "DROP" not in sql and "🚀" not in sql
    for parser_entry in ("@@@", "pdb.parse", "paradedb."):
        assert parser_entry not in sql


def test_pg_search_filters_are_bound_parameters_before_limit() -> None:
    doc = UUID("00000000-0000-0000-0000-000000000001")
    filters = SearchFilters(
        document_ids=[doc], file_types=[".PDF"], metadata={"lang": "en'--"}, text={"$not_contains": "x'"}
    )
    sql, params = pg_search_statement("heart attack", 5, filters)
    assert params == ["heart attack", 5, [doc], ["pdf"], "lang", ["en'--"], "x'"]
    assert "NOT (strpos(c.text, $7::text) > 0)" in sql
    assert "c.document_id = ANY($3::uuid[])" in sql
    assert "lower(d.file_type) = ANY($4::text[])" in sql
    assert "NULLIF((d.metadata || c.metadata) -> $5::text, 'null'::jsonb) @> ($6::jsonb -> 0)" in sql
    assert "JOIN documents d ON d.id = c.document_id" in sql
    assert sql.index("@> ($6") < sql.index("LIMIT $2")
    assert "en'--" not in sql


def test_pg_search_leaves_out_documents_bound_with_the_request_filters() -> None:
    """group_by=document reading past the documents a leg holds (ranking.fill_documents)."""
    held, named = UUID(int=1), UUID(int=2)
    filters = LegFilters.beside(SearchFilters(document_ids=[held, named]), [held])
    sql, params = pg_search_statement("heart attack", 5, filters, [UUID(int=9)])
    assert params == ["heart attack", 5, [UUID(int=9)], [held], [held, named]]
    assert "c.document_id <> ALL($4::uuid[])" in sql and "c.document_id = ANY($5::uuid[])" in sql
    assert sql.index("<> ALL($4") < sql.index("LIMIT $2")


def test_pg_search_scope_alone_needs_no_join_and_an_empty_scope_matches_nothing() -> None:
    sql, params = pg_search_statement("heart attack", 5, None, [])
    assert "JOIN" not in sql
    assert "c.collection_id = ANY($3::uuid[])" in sql and params[2] == []


def test_pg_search_text_is_cleaned_of_nul_and_lone_surrogates() -> None:
    _, params = pg_search_statement("a\x00b\ud800c", 3)
    assert params[0] == "a b?c"


# --- the migration: only a pg_search database gets a new index ---


@pytest.mark.parametrize("engine", ["pg_search", "native"])
def test_migration_rebuilds_the_index_only_on_pg_search(monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    """The pg_search branch cannot run here: its SQL is recorded instead (the native branch runs for real
    in tests/integration/test_bm25_migration.py)."""
    module = migration_0005()
    executed: list[str] = []

    def scalar(sql: str) -> str:
        if "app_meta" in sql and "bm25_engine" in sql:
            return engine
        assert "paradedb.version_info()" in sql, sql
        return "0.26.2"

    monkeypatch.setattr(module, "scalar", scalar)
    monkeypatch.setattr(module, "execute_sql", lambda sql, params=None: executed.append(sql))
    monkeypatch.setattr(module, "context", SimpleNamespace(script=scripts()))
    module.upgrade()
    module.downgrade()
    if engine == "native":
        assert executed == []
        return
    upgrade, downgrade = executed
    assert upgrade.index("DROP INDEX IF EXISTS chunks_bm25_idx;") < upgrade.index("CREATE INDEX")
    assert parse_index(upgrade.split(";", 1)[1]) == parse_index(official_index_sql())
    assert downgrade.startswith("DROP INDEX IF EXISTS chunks_bm25_idx;")
    assert parse_index(downgrade.split(";", 1)[1]).options == {"key_field": "id"}


# --- 0027: the index folds accents (pg_search's `ascii_folding`, as rag_bm25_text on the native engine) ---


def test_0027s_index_is_what_sqlalchemy_paradedb_compiles_with_ascii_folding() -> None:
    ours = parse_index(migration_0027().bm25_index_sql("0.26.2"))
    assert ours == parse_index(official_index_sql(FOLDED))
    assert ours.fields == (
        "id",
        "search_text::pdb.simple('stemmer=english','ascii_folding=true')",
        "collection_id",
    )
    assert ours.options == {}
    # As ParadeDB's documentation writes it (a space after the comma), and only the tokenizer differs.
    assert "pdb.simple('stemmer=english', 'ascii_folding=true')" in migration_0027().bm25_index_sql("0.26.2")
    assert replace(ours, fields=parse_index(official_index_sql()).fields) == parse_index(official_index_sql())


@pytest.mark.parametrize(
    ("version", "options"), [("0.26.0", {}), ("1.0.0", {}), ("0.25.3", {"key_field": "id"})]
)
def test_0027s_index_is_keyless_from_026(version: str, options: dict[str, str]) -> None:
    assert parse_index(migration_0027().bm25_index_sql(version)).options == options
    with pytest.raises(ValueError, match="unrecognised pg_search version"):
        migration_0027().bm25_index_sql("latest")


@pytest.mark.parametrize("engine", ["pg_search", "native"])
def test_0027_rebuilds_the_folding_index_only_on_pg_search_and_its_downgrade_0005s(
    monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """Both engines get the folding rag_bm25_text (the chat's every-word check reads it on either); the
    pg_search index is built again CONCURRENTLY with the folding tokenizer and swapped in, outside the
    migration's transaction, and back to 0005's on the way down; the native re-index runs only where the
    native tables are."""
    from rag_server.infra.migrations import helpers

    module = migration_0027()
    executed: list[str] = []

    def scalar(sql: str) -> Any:
        if "bm25_engine" in sql:
            return engine
        if "to_regclass('bm25_pack')" in sql:
            return engine == "native"
        assert "paradedb.version_info()" in sql, sql
        return "0.26.2"

    for target in (module, helpers):
        monkeypatch.setattr(target, "scalar", scalar)
        monkeypatch.setattr(target, "execute_sql", lambda sql, params=None: executed.append(sql))
    monkeypatch.setattr(module, "context", SimpleNamespace(script=scripts()))
    record_autocommit_blocks(monkeypatch, executed)
    module.upgrade()
    upgraded = list(executed)
    executed.clear()
    module.downgrade()
    downgraded = executed
    assert "CREATE OR REPLACE FUNCTION rag_bm25_text" in upgraded[0] and "translate(" in upgraded[0]
    assert "CREATE OR REPLACE FUNCTION rag_bm25_text" in downgraded[0] and "translate(" not in downgraded[0]
    if engine == "native":
        assert [s for s in upgraded if "chunks_bm25_idx" in s] == []
        assert len(upgraded) == len(downgraded) == 2 and "bm25_index_add" in upgraded[1]
        return
    for statements, official in ((upgraded, official_index_sql(FOLDED)), (downgraded, official_index_sql())):
        assert statements[1:] == [AUTOCOMMIT_BLOCK, *CONCURRENT_SWAP, AUTOCOMMIT_BLOCK_END], statements
        build = statements[4]
        assert build.startswith("CREATE INDEX CONCURRENTLY chunks_bm25_idx_next ON chunks")
        assert parse_index(build.replace(" CONCURRENTLY chunks_bm25_idx_next", " chunks_bm25_idx")) == (
            parse_index(official)
        )


# What each run of helpers.concurrent_rebuild_sql does around its CREATE INDEX CONCURRENTLY (the 4th).
AUTOCOMMIT_BLOCK, AUTOCOMMIT_BLOCK_END = "-- autocommit block", "-- end of the autocommit block"
CONCURRENT_SWAP = [
    "DROP INDEX CONCURRENTLY IF EXISTS chunks_bm25_idx_old",
    "DROP INDEX CONCURRENTLY IF EXISTS chunks_bm25_idx_next",
    mock.ANY,
    "BEGIN; ALTER INDEX IF EXISTS chunks_bm25_idx RENAME TO chunks_bm25_idx_old; "
    "ALTER INDEX chunks_bm25_idx_next RENAME TO chunks_bm25_idx; COMMIT",
    "DROP INDEX CONCURRENTLY IF EXISTS chunks_bm25_idx_old",
]


def record_autocommit_blocks(monkeypatch: pytest.MonkeyPatch, executed: list[str]) -> None:
    """Alembic's autocommit block (CONCURRENTLY refuses a transaction) noted among the statements."""
    from rag_server.infra.migrations import helpers

    @contextmanager
    def autocommit_block() -> Iterator[None]:
        executed.append(AUTOCOMMIT_BLOCK)
        yield
        executed.append(AUTOCOMMIT_BLOCK_END)

    migration_context = SimpleNamespace(autocommit_block=autocommit_block)
    monkeypatch.setattr(helpers, "op", SimpleNamespace(get_context=lambda: migration_context))


# --- the migrations since 0019: each engine's path names only its own objects ---

# The native engine's tables, functions and triggers (0002, 0003, 0014-0016, 0023: all `bm25_*`, the
# triggers `chunks_bm25_*`), and pg_search's index and namespaces. A migration reaching one of them on the
# other engine fails there (pg_search cannot run here, so that path is only ever recorded).
NATIVE_ONLY = re.compile(r"\bbm25_\w+|\bchunks_bm25_(?!idx(_next|_old)?\b)\w+")
PG_SEARCH_ONLY = re.compile(r"\bchunks_bm25_idx(_next|_old)?\b|\bpdb\.|\bparadedb\b")


def revisions_since(first: str) -> list[str]:
    oldest_first = [s.revision for s in reversed(list(scripts().walk_revisions()))]
    return oldest_first[oldest_first.index(first) :]


def recorded_upgrade(monkeypatch: pytest.MonkeyPatch, revision: str, engine: str) -> list[str]:
    """The statements `revision`'s upgrade runs on a database whose BM25 engine is `engine`."""
    from rag_server.infra.migrations import helpers

    module = scripts().get_revision(revision).module
    executed: list[str] = []

    def scalar(sql: str) -> Any:
        if re.search(r"to_regclass\('bm25_\w+'\)", sql):  # 0002's native tables (0014 on: the pack's)
            return engine == "native"
        if "bm25_engine" in sql:
            return engine
        if "paradedb.version_info()" in sql:
            return "0.26.2"
        if sql.startswith("SELECT count(*) FROM (SELECT 1 FROM"):  # 0019: a table's size, bounded
            return 10
        raise AssertionError(f"{revision} asks {sql!r}: say here what each engine answers")

    for target in (module, helpers):
        monkeypatch.setattr(target, "scalar", scalar, raising=False)
        monkeypatch.setattr(
            target, "execute_sql", lambda sql, params=None: executed.append(sql), raising=False
        )
    settings = SimpleNamespace(vector_recheck_max_chunks=50_000)
    monkeypatch.setattr(module, "migration_settings", lambda: settings, raising=False)
    record_autocommit_blocks(monkeypatch, executed)
    module.upgrade()
    return executed


@pytest.mark.parametrize("revision", revisions_since("0019_vectors_in_row"))
def test_a_migration_since_0019_names_no_object_of_the_other_engine(
    monkeypatch: pytest.MonkeyPatch, revision: str
) -> None:
    """docs/decisions/0003 (migrations 0019-0024 on ParadeDB) says why each is safe there; this keeps
    the part a test can: no native-only object on a pg_search database, and the reverse."""
    for engine, foreign in (("pg_search", NATIVE_ONLY), ("native", PG_SEARCH_ONLY)):
        statements = recorded_upgrade(monkeypatch, revision, engine)
        assert [s for s in statements if foreign.search(s)] == [], engine


def test_0023_does_nothing_on_pg_search_and_0019_rewrites_chunks_there_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert recorded_upgrade(monkeypatch, "0023_bm25_remove_by_chunk", "pg_search") == []
    # CLUSTER rebuilds every index of the table, the ParadeDB one too (as VACUUM FULL, which pg_search's
    # own tests run over its index); nothing in 0019 depends on the engine.
    assert recorded_upgrade(monkeypatch, "0019_vectors_in_row", "pg_search") == recorded_upgrade(
        monkeypatch, "0019_vectors_in_row", "native"
    )
