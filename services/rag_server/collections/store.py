"""All collection SQL: create, list, get, update, delete (with `force`, ONE transaction), and `resolve`.

`resolve` is the one way a request's collection names/ids become the ids a query is scoped to: search,
chat, uploads, document listings and duplicate checks all go through it, so a later API-key or
row-level scope narrows every collection-scoped query in this one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from rag_server.collections.models import (
    DEFAULT_COLLECTION,
    DEFAULT_COLLECTION_ID,
    NAME_RE,
    Collection,
    CollectionList,
    CreateCollection,
    ResolvedCollection,
    UpdateCollection,
)
from rag_server.errors import CollectionNotFoundError, ConflictError
from rag_server.infra.database import LONG_STATEMENT_TIMEOUT_S, Executor, connection, transaction
from rag_server.infra.queue import IngestQueue
from rag_server.ingestion.deletion import lock_out_writes

_COLUMNS = """c.id, c.name, c.description, c.hybrid_alpha, c.created_at, c.updated_at,
              (SELECT count(*) FROM documents d WHERE d.collection_id = c.id)::int AS document_count"""


def parse_ref(id_or_name: str) -> UUID | str | None:
    """A UUID string is an id, a slug is a name; anything else can name no collection (None)."""
    try:
        return UUID(id_or_name)
    except ValueError:
        return id_or_name if NAME_RE.match(id_or_name) else None


async def create_collection(conn: Executor, body: CreateCollection) -> Collection:
    try:
        row = await conn.fetchrow(
            f"""
            WITH c AS (
                INSERT INTO collections (name, description, hybrid_alpha) VALUES ($1, $2, $3) RETURNING *
            )
            SELECT {_COLUMNS} FROM c
            """,
            body.name,
            body.description,
            body.hybrid_alpha,
        )
    except asyncpg.UniqueViolationError:
        raise ConflictError(f"a collection named {body.name!r} already exists") from None
    assert row is not None
    return Collection.model_validate(dict(row))


async def list_collections(conn: Executor, *, limit: int = 100, offset: int = 0) -> CollectionList:
    async with connection(conn) as c:
        total = await c.fetchval("SELECT count(*) FROM collections")
        rows = await c.fetch(
            f"SELECT {_COLUMNS} FROM collections c ORDER BY c.name LIMIT $1 OFFSET $2", limit, offset
        )
    items = [Collection.model_validate(dict(r)) for r in rows]
    return CollectionList(items=items, total=int(total), limit=limit, offset=offset)


async def get_collection(conn: Executor, id_or_name: str) -> Collection:
    """By id (a UUID string) or by name. NotFoundError naming it when there is none."""
    ref = parse_ref(id_or_name)
    row = None
    if ref is not None:
        column = "id" if isinstance(ref, UUID) else "name"
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM collections c WHERE c.{column} = $1", ref)
    if row is None:
        raise CollectionNotFoundError(f"no collection {id_or_name!r}")
    return Collection.model_validate(dict(row))


async def resolve(conn: Executor, names_or_ids: Sequence[str] | None) -> list[ResolvedCollection]:
    """The collections a request names (None: `default`), in the order named, without repeats.
    An unknown one is a NotFoundError naming it. Every search, chat turn and upload calls it: it reads
    the collections' own rows only (a document count cost 24-36 ms per search at 100k documents)."""
    refs = list(dict.fromkeys(names_or_ids if names_or_ids is not None else [DEFAULT_COLLECTION]))
    parsed = [parse_ref(r) for r in refs]
    ids = [p for p in parsed if isinstance(p, UUID)]
    names = [p for p in parsed if isinstance(p, str)]
    rows = await conn.fetch(
        "SELECT id, name, hybrid_alpha FROM collections WHERE id = ANY($1::uuid[]) OR name = ANY($2::text[])",
        ids,
        names,
    )
    by_ref = {str(r["id"]): r for r in rows} | {r["name"]: r for r in rows}
    found: dict[UUID, ResolvedCollection] = {}
    for ref, p in zip(refs, parsed, strict=True):
        row = by_ref.get(str(p)) if p is not None else None
        if row is None:
            raise CollectionNotFoundError(f"no collection {ref!r}")
        found.setdefault(row["id"], ResolvedCollection(row["id"], row["name"], row["hybrid_alpha"]))
    return list(found.values())


async def resolve_ids(conn: Executor, names_or_ids: Sequence[str] | None) -> list[UUID]:
    return [c.id for c in await resolve(conn, names_or_ids)]


async def hybrid_alphas(conn: Executor, ids: Sequence[UUID]) -> list[float | None]:
    """The fusion weight each collection is searched with (None: the server's), for ids already resolved."""
    rows = await conn.fetch("SELECT hybrid_alpha FROM collections WHERE id = ANY($1::uuid[])", list(ids))
    return [r["hybrid_alpha"] for r in rows]


async def set_hybrid_alpha(conn: Executor, id_or_name: str, alpha: float | None) -> Collection:
    """Set (or, with None, clear) the collection's fusion weight; `rag-server eval --tune` writes it."""
    return await update_collection(conn, id_or_name, UpdateCollection(hybrid_alpha=alpha))


async def update_collection(conn: Executor, id_or_name: str, body: UpdateCollection) -> Collection:
    async with transaction(conn) as c:
        current = await get_collection(c, id_or_name)
        name = body.name if body.name is not None else current.name
        if current.id == DEFAULT_COLLECTION_ID and name != DEFAULT_COLLECTION:
            raise ConflictError("the collection 'default' cannot be renamed")
        description = body.description if body.description is not None else current.description
        alpha = body.hybrid_alpha if body.sets_alpha() else current.hybrid_alpha
        try:
            await c.execute(
                """
                UPDATE collections SET name = $2, description = $3, hybrid_alpha = $4, updated_at = now()
                WHERE id = $1
                """,
                current.id,
                name,
                description,
                alpha,
            )
        except asyncpg.UniqueViolationError:
            raise ConflictError(f"a collection named {name!r} already exists") from None
        return await get_collection(c, str(current.id))


class CollectionNotEmptyError(ConflictError):
    """A delete refused because the collection holds documents. Its message names the API's parameter
    (`force=true`); `advice` words it for another caller (the CLI's `--force`)."""

    def __init__(self, name: str, documents: int) -> None:
        self.name, self.documents = name, documents
        super().__init__(self.advice("force=true"))

    def advice(self, force: str) -> str:
        return f"the collection {self.name!r} holds {self.documents} documents; delete with {force}"


async def delete_collection(
    conn: Executor, queue: IngestQueue, id_or_name: str, *, force: bool = False
) -> None:
    """Delete a collection. Holding documents it is refused (ConflictError) unless `force`: then its
    documents (bytes and chunks cascade), its batches and tasks, and the queue messages of its unfinished
    tasks go with it, in ONE transaction. `default` is never deleted."""
    async with transaction(conn) as c:
        ref = parse_ref(id_or_name)
        column = "id" if isinstance(ref, UUID) else "name"
        # FOR UPDATE: a write into it (share_collection) waits, then finds it gone.
        row = None
        if ref is not None:
            row = await c.fetchrow(f"SELECT id, name FROM collections WHERE {column} = $1 FOR UPDATE", ref)
        if row is None:
            raise CollectionNotFoundError(f"no collection {id_or_name!r}")
        if row["id"] == DEFAULT_COLLECTION_ID:
            raise ConflictError("the collection 'default' cannot be deleted")
        documents = await c.fetchval("SELECT count(*) FROM documents WHERE collection_id = $1", row["id"])
        if documents and not force:
            raise CollectionNotEmptyError(row["name"], documents)
        await _delete_contents(c, queue, row["id"])
        await c.execute("DELETE FROM collections WHERE id = $1", row["id"])


async def _delete_contents(c: asyncpg.Connection, queue: IngestQueue, collection_id: UUID) -> None:
    # Lock order task -> document -> (BM25 triggers) bm25_stats, as the worker's final write takes them:
    # a worker finishing one of these tasks waits, then finds its task and document gone; one writing its
    # chunks gives way at its next statement (deletion.lock_out_writes: that lock first).
    await lock_out_writes(c, collection_id=collection_id)
    tasks = await c.fetch(
        """
        SELECT t.id, t.msg_id, t.status FROM job_tasks t JOIN job_batches b ON b.id = t.batch_id
        WHERE b.collection_id = $1 ORDER BY t.id FOR UPDATE OF t
        """,
        collection_id,
        timeout=LONG_STATEMENT_TIMEOUT_S,
    )
    for t in tasks:
        if t["status"] in ("queued", "processing") and t["msg_id"] is not None:
            await queue.delete(t["msg_id"], conn=c)
    long = LONG_STATEMENT_TIMEOUT_S
    await c.execute(
        "SELECT 1 FROM documents WHERE collection_id = $1 ORDER BY id FOR UPDATE", collection_id, timeout=long
    )
    await c.execute("DELETE FROM documents WHERE collection_id = $1", collection_id, timeout=long)
    await c.execute("DELETE FROM job_batches WHERE collection_id = $1", collection_id, timeout=long)
