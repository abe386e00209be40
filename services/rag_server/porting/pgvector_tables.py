"""Read the tables LlamaIndex's PGVectorStore and LangChain's PGVector write, told apart by columns.

- LlamaIndex `data_<name>`: id (bigserial: insertion order), node_id, text, metadata_ (json), embedding.
  Its metadata carries `ref_doc_id` / `doc_id` (the source document) and `_node_content` (the serialised
  node, dropped here).
- LangChain `langchain_pg_embedding`: id, collection_id -> langchain_pg_collection (uuid, name),
  document, cmetadata (jsonb), embedding; langchain_community's older table has uuid + custom_id
  instead of id.
Neither records the embedding model: vectors are reused only when `--embedding-model` names the
database's model and the dimensions match.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from rag_server.infra.admin import quote_ident
from rag_server.infra.database import plain_url
from rag_server.porting.models import PortingError, SourceRecord

LLAMAINDEX_COLUMNS = {"id", "node_id", "text", "metadata_", "embedding"}
LANGCHAIN_COLUMNS = {"id", "collection_id", "document", "cmetadata", "embedding"}
# langchain_community's older PGVector: a uuid key and the caller's id in custom_id.
LANGCHAIN_COMMUNITY_COLUMNS = {"uuid", "custom_id", "collection_id", "document", "cmetadata", "embedding"}


@dataclass(frozen=True)
class _Layout:
    kind: str  # "llamaindex" | "langchain"
    id_sql: str
    text_sql: str
    metadata_sql: str
    order_sql: str


LAYOUTS = {
    "llamaindex": _Layout("llamaindex", "node_id", "text", "metadata_", "id"),
    "langchain": _Layout("langchain", "id", "document", "cmetadata", "id"),
    "langchain_community": _Layout(
        "langchain", "coalesce(custom_id, uuid::text)", "document", "cmetadata", "uuid"
    ),
}


def _metadata(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value) if isinstance(value, dict) else {}


async def _columns(conn: asyncpg.Connection, table: str) -> tuple[str, set[str]]:
    """(quoted schema.table, its columns); a bare name is also tried as LlamaIndex's data_<name>."""
    schema, _, name = table.rpartition(".")
    for candidate in (name, f"data_{name}"):
        rows = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = $1 AND ($2 = '' OR table_schema = $2)",
            candidate,
            schema,
        )
        if rows:
            qualified = (
                f"{quote_ident(schema)}.{quote_ident(candidate)}" if schema else quote_ident(candidate)
            )
            return qualified, {r["column_name"] for r in rows}
    raise PortingError(f"no table {table!r} in that database")


class PgVectorSource:
    def __init__(self, conn: asyncpg.Connection, table: str, layout: _Layout, collection_id: Any) -> None:
        self._conn = conn
        self._table = table
        self._layout = layout
        self._collection_id = collection_id
        self.kind = layout.kind
        self.origin = f"{layout.kind}:{table}" + (f":{collection_id}" if collection_id else "")
        self.identity: str | None = None  # a LangChain collection's id is in the origin already
        self.model: str | None = None
        self.dim: int | None = None

    def _where(self, extra: str = "") -> str:
        clauses = ["TRUE"]
        if self._collection_id is not None:
            clauses.append("collection_id = $1")
        if extra:
            clauses.append(extra)
        return " AND ".join(f"({c})" for c in clauses)

    def _args(self) -> list[Any]:
        return [self._collection_id] if self._collection_id is not None else []

    async def _dimension(self) -> int | None:
        value = await self._conn.fetchval(
            f"SELECT vector_dims(embedding) FROM {self._table} WHERE {self._where('embedding IS NOT NULL')}"
            " LIMIT 1",
            *self._args(),
        )
        return None if value is None else int(value)

    async def scan(self) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        lay = self._layout
        sql = (
            f"SELECT {lay.id_sql}::text AS id, {lay.metadata_sql}::text AS metadata FROM {self._table}"
            f" WHERE {self._where()} ORDER BY {lay.order_sql}"
        )
        async with self._conn.transaction(readonly=True):
            async for row in self._conn.cursor(sql, *self._args(), prefetch=1000):
                yield row["id"], _metadata(row["metadata"])

    async def fetch(self, ids: Sequence[str]) -> list[SourceRecord]:
        lay = self._layout
        n = len(self._args()) + 1
        rows = await self._conn.fetch(
            f"SELECT {lay.id_sql}::text AS id, {lay.text_sql} AS text, {lay.metadata_sql}::text AS metadata,"
            f" embedding::text AS embedding FROM {self._table}"
            f" WHERE {self._where(f'{lay.id_sql}::text = ANY(${n}::text[])')}",
            *self._args(),
            list(ids),
        )
        return [
            SourceRecord(
                id=r["id"],
                text=r["text"] or "",
                metadata=_metadata(r["metadata"]),
                embedding=None
                if r["embedding"] is None
                else np.asarray(json.loads(r["embedding"]), dtype=np.float32),
            )
            for r in rows
        ]


async def _langchain_collection(conn: asyncpg.Connection, table: str, name: str | None) -> Any:
    schema = table.rpartition(".")[0]
    collections_table = (f"{quote_ident(schema)}." if schema else "") + quote_ident("langchain_pg_collection")
    try:
        rows = await conn.fetch(f"SELECT uuid, name FROM {collections_table} ORDER BY name")
    except asyncpg.UndefinedTableError:
        raise PortingError("a LangChain table needs its langchain_pg_collection table beside it") from None
    names = [r["name"] for r in rows]
    if name is None and len(rows) == 1:
        return rows[0]["uuid"]
    for r in rows:
        if r["name"] == name:
            return r["uuid"]
    wanted = "choose one with --source-collection" if name is None else f"no LangChain collection {name!r}"
    raise PortingError(f"{wanted}; the table holds: {', '.join(names) or 'none'}")


@asynccontextmanager
async def open_pgvector_source(
    url: str, table: str, source_collection: str | None = None
) -> AsyncIterator[PgVectorSource]:
    try:
        conn = await asyncpg.connect(plain_url(url))
    except (OSError, asyncpg.PostgresError, ValueError) as exc:
        raise PortingError(f"cannot connect to the source database: {exc}") from None
    try:
        qualified, columns = await _columns(conn, table)
        if columns >= LLAMAINDEX_COLUMNS:
            source = PgVectorSource(conn, qualified, LAYOUTS["llamaindex"], None)
        elif columns >= LANGCHAIN_COLUMNS or columns >= LANGCHAIN_COMMUNITY_COLUMNS:
            collection_id = await _langchain_collection(conn, table, source_collection)
            layout = LAYOUTS["langchain" if "id" in columns else "langchain_community"]
            source = PgVectorSource(conn, qualified, layout, collection_id)
        else:
            raise PortingError(
                f"{table} is neither a LlamaIndex PGVectorStore table (columns {sorted(LLAMAINDEX_COLUMNS)}) "
                f"nor LangChain's langchain_pg_embedding (columns {sorted(LANGCHAIN_COLUMNS)}); "
                f"it has {sorted(columns)}"
            )
        source.dim = await source._dimension()
        yield source
    finally:
        await conn.close()
