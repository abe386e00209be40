"""All SQL about embedding generations (migration 0011): the rows, their vectors, the switch.

Locking: every chunk writer takes the generations lock SHARED in its transaction before reading which
generations it must write (`lock_for_writer`); the switch, the rollback and `--finalize` take it
EXCLUSIVE. So when a switch counts the chunks still missing a vector of the new generation, every
writer that could add one has either committed (counted) or not yet read the states (it will see the
new ones and write for them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

import numpy as np

from rag_server.errors import ConflictError, NotFoundError
from rag_server.infra.database import Executor, transaction, vector_literal

# Generation 1 is the model the database was created with: its vectors are chunks.embedding.
BASE_GENERATION = 1
# A generation's dimensions: embedding_generations.dim's CHECK (0011), RAG_EMBEDDING_DIM's range (0001).
MAX_DIM = 16_000
# pg_advisory_xact_lock key of the generations (any constant unique to this application).
GENERATIONS_LOCK = 7_220_011_001

State = Literal["building", "active", "retired", "dropped"]
_COLUMNS = "id, provider, model, dim, base_url, state, error, created_at, activated_at"


@dataclass(frozen=True)
class Generation:
    id: int
    provider: str
    model: str
    dim: int
    base_url: str | None
    state: State
    error: str | None = None
    created_at: datetime | None = None
    activated_at: datetime | None = None

    @property
    def is_base(self) -> bool:
        return self.id == BASE_GENERATION

    def describe(self) -> str:
        return f"generation {self.id} ({self.provider} {self.model}, {self.dim}-d, {self.state})"


class GenerationsChangedError(Exception):
    """A chunk writer lacks vectors for a generation that must have them (one became active or was
    created after the writer embedded): embed again and retry the write."""


def _generation(row: object) -> Generation:
    return Generation(**dict(row))  # type: ignore[call-overload]


async def list_generations(conn: Executor) -> list[Generation]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM embedding_generations ORDER BY id")
    return [_generation(r) for r in rows]


async def get_generation(conn: Executor, generation_id: int) -> Generation:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM embedding_generations WHERE id = $1", generation_id)
    if row is None:
        raise NotFoundError(f"no embedding generation {generation_id}")
    return _generation(row)


async def active_generation(conn: Executor) -> Generation:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM embedding_generations WHERE state = 'active'")
    if row is None:  # the unique partial index allows one; the switch never leaves none
        raise RuntimeError("no active embedding generation")
    return _generation(row)


async def live_generations(conn: Executor) -> list[Generation]:
    """Generations whose vectors exist or are being built: what a chunk writer embeds for."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM embedding_generations WHERE state <> 'dropped'"
        " ORDER BY state <> 'active', id"
    )
    return [_generation(r) for r in rows]


async def create_generation(
    conn: Executor, provider: str, model: str, dim: int, base_url: str | None
) -> Generation:
    """A new `building` generation; refused while another is building or a retired one is kept."""
    async with transaction(conn) as c:
        await c.execute("SELECT pg_advisory_xact_lock($1)", GENERATIONS_LOCK)
        other = await c.fetchrow(
            f"SELECT {_COLUMNS} FROM embedding_generations WHERE state IN ('building', 'retired')"
        )
        if other is not None:
            g = _generation(other)
            hint = "finalize or roll back first" if g.state == "retired" else "let it finish or finalize it"
            raise ConflictError(f"{g.describe()} exists: {hint}")
        row = await c.fetchrow(
            f"""
            INSERT INTO embedding_generations (provider, model, dim, base_url, state)
            VALUES ($1, $2, $3, $4, 'building') RETURNING {_COLUMNS}
            """,
            provider,
            model,
            dim,
            base_url,
        )
    return _generation(row)


async def lock_for_writer(conn: Executor, given: Sequence[int]) -> set[int]:
    """Inside a chunk writer's transaction: the generations lock (shared), then the live generations
    this write must (active, retired) or may (building) carry. Raises GenerationsChangedError when a
    required one is not in `given`; returns the live ones (the writer drops vectors of dropped ones)."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", GENERATIONS_LOCK)
    rows = await conn.fetch("SELECT id, state FROM embedding_generations WHERE state <> 'dropped'")
    required = {r["id"] for r in rows if r["state"] != "building"}
    missing = required - set(given)
    if missing:
        raise GenerationsChangedError(f"vectors of generation(s) {sorted(missing)} are required")
    return {r["id"] for r in rows}


async def insert_document_vectors(
    conn: Executor, document_id: UUID, chunk_indexes: Sequence[int], generation_id: int, vectors: np.ndarray
) -> None:
    """A document's just-inserted chunks' vectors of one (non-base) generation, by chunk index."""
    await conn.execute(
        """
        INSERT INTO chunk_vectors (chunk_id, generation_id, embedding)
        SELECT c.id, $2, v.embedding::vector
        FROM unnest($3::int[], $4::text[]) AS v(idx, embedding)
        JOIN chunks c ON c.document_id = $1 AND c.chunk_index = v.idx
        ON CONFLICT (generation_id, chunk_id) DO UPDATE SET embedding = EXCLUDED.embedding
        """,
        document_id,
        generation_id,
        list(chunk_indexes),
        [vector_literal(v) for v in vectors],
    )


async def upsert_vectors(
    conn: Executor, generation_id: int, chunk_ids: Sequence[int], vectors: np.ndarray
) -> int | None:
    """The backfill's write: idempotent (a redelivered batch overwrites); chunks deleted meanwhile are
    skipped. Under the generations lock (shared) like every writer, so nothing is written once
    `--finalize` dropped the generation (None then). Returns the rows written."""
    async with transaction(conn) as c:
        await c.execute("SELECT pg_advisory_xact_lock_shared($1)", GENERATIONS_LOCK)
        state = await c.fetchval("SELECT state FROM embedding_generations WHERE id = $1", generation_id)
        if state in (None, "dropped"):
            return None
        return await _upsert(c, generation_id, chunk_ids, vectors)


async def _upsert(conn: Executor, generation_id: int, chunk_ids: Sequence[int], vectors: np.ndarray) -> int:
    status = await conn.execute(
        """
        INSERT INTO chunk_vectors (chunk_id, generation_id, embedding)
        SELECT c.id, $1, v.embedding::vector
        FROM unnest($2::bigint[], $3::text[]) AS v(id, embedding)
        JOIN chunks c ON c.id = v.id
        ON CONFLICT (generation_id, chunk_id) DO UPDATE SET embedding = EXCLUDED.embedding
        """,
        generation_id,
        list(chunk_ids),
        [vector_literal(v) for v in vectors],
    )
    return int(str(status).split()[-1])


async def missing_chunks(
    conn: Executor, generation_id: int, first: int, last: int, limit: int
) -> list[tuple[int, str]]:
    """Chunks with ids in [first, last] that have no vector of the generation yet, by id."""
    rows = await conn.fetch(
        """
        SELECT c.id, c.search_text FROM chunks c
        WHERE c.id BETWEEN $2 AND $3
          AND NOT EXISTS (SELECT 1 FROM chunk_vectors v WHERE v.generation_id = $1 AND v.chunk_id = c.id)
        ORDER BY c.id LIMIT $4
        """,
        generation_id,
        first,
        last,
        limit,
    )
    return [(int(r["id"]), str(r["search_text"])) for r in rows]


async def progress(conn: Executor, generation_id: int) -> tuple[int, int]:
    """(chunks with a vector of the generation, all chunks)."""
    if generation_id == BASE_GENERATION:
        row = await conn.fetchrow("SELECT count(embedding) AS done, count(*) AS total FROM chunks")
    else:
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM chunk_vectors WHERE generation_id = $1) AS done,
                   (SELECT count(*) FROM chunks) AS total
            """,
            generation_id,
        )
    assert row is not None
    return int(row["done"]), int(row["total"])


async def id_ranges(conn: Executor, generation_id: int, size: int) -> list[tuple[int, int]]:
    """Id ranges of about `size` chunks each, covering every chunk still missing the generation."""
    rows = await conn.fetch(
        """
        SELECT min(id) AS first, max(id) AS last FROM (
            SELECT c.id, (row_number() OVER (ORDER BY c.id) - 1) / $2 AS bucket FROM chunks c
            WHERE NOT EXISTS (SELECT 1 FROM chunk_vectors v WHERE v.generation_id = $1 AND v.chunk_id = c.id)
        ) numbered GROUP BY bucket ORDER BY first
        """,
        generation_id,
        size,
    )
    return [(int(r["first"]), int(r["last"])) for r in rows]


async def set_error(conn: Executor, generation_id: int, error: str | None) -> None:
    """The last failure of the generation's backfill (None: cleared when its work is queued anew)."""
    await conn.execute("UPDATE embedding_generations SET error = $2 WHERE id = $1", generation_id, error)


async def swap_active(conn: Executor, target_id: int, expected: State) -> Generation:
    """ONE transaction: the active generation becomes retired and `target_id` (in state `expected`)
    active, only if every chunk has a vector of the target. Returns the generation retired.
    ConflictError when the target is not ready (nothing changes)."""
    async with transaction(conn) as c:
        await c.execute("SELECT pg_advisory_xact_lock($1)", GENERATIONS_LOCK)
        target = await get_generation(c, target_id)
        if target.state != expected:
            raise ConflictError(f"{target.describe()} is not {expected}")
        done, total = await progress(c, target_id)
        if done < total:
            raise ConflictError(f"{target.describe()} has vectors for {done} of {total} chunks")
        old = await c.fetchrow(
            f"""
            UPDATE embedding_generations SET state = 'retired', retired_at = now()
            WHERE state = 'active' RETURNING {_COLUMNS}
            """
        )
        await c.execute(
            """
            UPDATE embedding_generations SET state = 'active', activated_at = now(), retired_at = NULL,
                   error = NULL
            WHERE id = $1
            """,
            target_id,
        )
    assert old is not None
    return _generation(old)


async def mark_dropped(conn: Executor, states: Sequence[State]) -> Generation:
    """The one retired (or building) generation becomes dropped: writers stop writing it at once."""
    async with transaction(conn) as c:
        await c.execute("SELECT pg_advisory_xact_lock($1)", GENERATIONS_LOCK)
        row = await c.fetchrow(
            f"""
            UPDATE embedding_generations SET state = 'dropped', dropped_at = now()
            WHERE state = ANY($1::text[]) RETURNING {_COLUMNS}
            """,
            list(states),
        )
    if row is None:
        raise ConflictError(f"no {' or '.join(states)} embedding generation to drop")
    return _generation(row)
