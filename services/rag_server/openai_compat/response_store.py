"""Stored responses of `/v1/responses` (`v1_responses`, migration 0030): all their SQL.

A stored response keeps the request's input items and the response as answered. Row-level security
decides what a key reaches: its own responses in collections it can read (an admin: any); everything
else is a ResponseNotFoundError, as an unknown id is. Every function takes `conn` first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from rag_server.errors import (
    CollectionNotFoundError,
    ForbiddenError,
    PreviousResponseNotFoundError,
    ResponseNotFoundError,
)
from rag_server.infra.database import Executor

# The ids this server gives (responses_service._Draft): anything else names no stored response.
RESPONSE_ID = re.compile(r"resp_[0-9a-f]{32}")


@dataclass(frozen=True)
class StoredResponse:
    id: str
    collection_id: UUID
    previous_id: str | None
    input: list[dict[str, Any]]
    response: dict[str, Any]


def _checked(response_id: str, missing: ResponseNotFoundError) -> str:
    if RESPONSE_ID.fullmatch(response_id) is None:  # never sent to the database (a NUL, 10 MB...)
        raise missing
    return response_id


async def save(
    conn: Executor,
    response_id: str,
    *,
    collection_id: UUID,
    previous_id: str | None,
    input_items: list[dict[str, Any]],
    response: dict[str, Any],
) -> None:
    """Store an answered response; its owner is the calling key (the column's default, 0030), which must
    still be live (ForbiddenError)."""
    try:
        await conn.execute(
            """
            INSERT INTO v1_responses (id, collection_id, previous_id, input, response)
            VALUES ($1, $2, $3, $4, $5)
            """,
            response_id,
            collection_id,
            previous_id,
            input_items,
            response,
        )
    except asyncpg.ForeignKeyViolationError:
        raise CollectionNotFoundError("the model's collection was deleted while it answered") from None
    except asyncpg.InsufficientPrivilegeError:  # 0030's policy: a key revoked since the answer began
        raise ForbiddenError("the response was not stored: its API key was revoked") from None


async def get(conn: Executor, response_id: str) -> StoredResponse:
    row = await conn.fetchrow(
        "SELECT id, collection_id, previous_id, input, response FROM v1_responses WHERE id = $1",
        _checked(response_id, ResponseNotFoundError(response_id)),
    )
    if row is None:
        raise ResponseNotFoundError(response_id)
    return StoredResponse(**dict(row))


async def conversation(conn: Executor, response_id: str, *, depth: int) -> list[tuple[str, str]]:
    """The user and assistant messages of the chain that ends with `response_id`, oldest first: each
    response's input messages, then its answer; at most `depth` responses back (a response deleted,
    pruned or out of the key's reach ends the chain there). PreviousResponseNotFoundError for
    `response_id`."""
    rows = await conn.fetch(
        """
        WITH RECURSIVE chain AS (
            SELECT previous_id, input, response -> 'output' AS output, 1 AS depth
            FROM v1_responses WHERE id = $1
          UNION ALL
            SELECT r.previous_id, r.input, r.response -> 'output', c.depth + 1
            FROM chain c JOIN v1_responses r ON r.id = c.previous_id
            WHERE c.depth < $2
        )
        SELECT input, output FROM chain ORDER BY depth DESC
        """,
        _checked(response_id, PreviousResponseNotFoundError(response_id)),
        max(depth, 1),
    )
    if not rows:
        raise PreviousResponseNotFoundError(response_id)
    messages: list[tuple[str, str]] = []
    for row in rows:
        for item in [*row["input"], *(row["output"] or [])]:
            if item.get("role") in ("user", "assistant"):
                text = "".join(part.get("text") or "" for part in item.get("content") or [])
                messages.append((item["role"], text))
    return messages


async def delete(conn: Executor, response_id: str) -> None:
    missing = ResponseNotFoundError(response_id)
    deleted = await conn.fetchval(
        "DELETE FROM v1_responses WHERE id = $1 RETURNING id", _checked(response_id, missing)
    )
    if deleted is None:
        raise missing


# --- retention (ingestion/retention.py: every key's, as the system scope) ---------------------------


async def count_old(conn: Executor, cutoff: datetime) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM v1_responses WHERE created_at < $1", cutoff))


async def delete_old(conn: Executor, cutoff: datetime, limit: int) -> int:
    """Delete at most `limit` responses created before `cutoff`; how many were."""
    return int(
        await conn.fetchval(
            """
            WITH gone AS (
                DELETE FROM v1_responses WHERE id IN (
                    SELECT id FROM v1_responses WHERE created_at < $1 ORDER BY created_at, id LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                RETURNING 1
            )
            SELECT count(*) FROM gone
            """,
            cutoff,
            limit,
        )
    )
