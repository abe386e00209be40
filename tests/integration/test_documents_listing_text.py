"""GET /documents?text=...: the documents whose chunks hold a text, counted and paged, looked for once.

The text filter reads every chunk of the collection. The listing counted the matches in one statement
and read the page in another, so the chunks were read twice (0.47 s instead of 0.12 s at 15,000
documents of 3 chunks), and the two could disagree when a document changed in between."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from rag_server.infra.database import owner_connection
from rag_server.infra.runtime import Runtime
from rag_server.ingestion import documents
from rag_server.ingestion.models import DocumentSort
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct

OTTERS = {f"otters-{n}.txt" for n in range(5)}
NAMES = sorted(OTTERS | {f"wolves-{n}.txt" for n in range(3)})


def animal(name: str) -> str:
    return "otters" if name in OTTERS else "wolves"


@pytest.fixture(scope="module")
async def corpus(runtime: Runtime) -> None:
    docs = [
        DirectDocument(
            filename=name,
            content=f"Field notes {name}: the {animal(name)} came back at dusk.".encode(),
            metadata={"n": i},
        )
        for i, name in enumerate(NAMES)
    ]
    await ingest_documents_direct(runtime, docs)


@pytest.fixture
async def conn(runtime: Runtime, corpus: None) -> AsyncIterator[asyncpg.Connection]:
    async with owner_connection(runtime.database_url) as c:
        yield c


def statements(conn: asyncpg.Connection) -> list[str]:
    seen: list[str] = []
    conn.add_query_logger(lambda record: seen.append(record.query))
    return seen


@pytest.mark.parametrize("sort", ["name", "uploaded", "chunks", "size", "type", "status"])
@pytest.mark.parametrize("descending", [False, True])
async def test_pages_of_the_matches_add_up_to_the_count(
    conn: asyncpg.Connection, sort: DocumentSort, descending: bool
) -> None:
    text = {"$contains": "otters"}
    every = await documents.list_documents(conn, limit=50, sort=sort, descending=descending, text=text)
    assert every.total == len(every.items) == len(OTTERS)
    assert {d.filename for d in every.items} == OTTERS
    paged: list[Any] = []
    for offset in range(0, 6, 2):
        page = await documents.list_documents(
            conn, limit=2, offset=offset, sort=sort, descending=descending, text=text
        )
        assert page.total == len(OTTERS) and (page.limit, page.offset) == (2, offset)
        paged += page.items
    assert [d.id for d in paged] == [d.id for d in every.items]  # the same order, page by page
    if sort == "name":
        assert [d.filename for d in every.items] == sorted(OTTERS, reverse=descending)


async def test_no_match_and_a_page_past_the_end(conn: asyncpg.Connection) -> None:
    nothing = await documents.list_documents(conn, text={"$contains": "narwhals"})
    assert (nothing.total, nothing.items) == (0, [])
    past = await documents.list_documents(conn, offset=40, text={"$contains": "otters"})
    assert (past.total, past.items) == (len(OTTERS), [])
    others = await documents.list_documents(
        conn, text={"$not_contains": "otters"}, sort="name", descending=False
    )
    assert [d.filename for d in others.items] == sorted(set(NAMES) - OTTERS) and others.total == 3
    both = await documents.list_documents(conn, text={"$contains": "otters"}, metadata={"n": {"$gte": 5}})
    assert both.total == len(both.items) == len([n for n in NAMES[5:] if n in OTTERS])


async def test_the_chunks_are_searched_in_one_statement(conn: asyncpg.Connection) -> None:
    seen = statements(conn)
    listed = await documents.list_documents(conn, limit=2, text={"$contains": "otters"})
    assert listed.total == len(OTTERS) and len(listed.items) == 2
    await asyncio.sleep(0.1)  # asyncpg calls the logger after the statement, not before returning
    assert len([q for q in seen if "chunks" in q]) == 1, seen
