"""GET /documents?sort=name: natural order, as file managers give it (digit runs compared as numbers,
case ignored, ties by id), the same with or without a text filter, in both directions, and pages that
add up to the whole list.

Plain text order put "a10" before "a2" and "chapter 10.pdf" before "chapter 2.pdf" (migration 0022:
`documents.name_key`)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct

# Ascending natural order; "file 007" and "file 7" are one number (their order: their ids).
NATURAL = [
    f"{stem}.txt"
    for stem in (
        "0",
        "a2",
        "A3",
        "a10",
        "b",
        "chapter 2",
        "Chapter 9",
        "chapter 10",
        "file 007",
        "file 7",
        "file 8",
        "x99999999999999999999y",  # 20 digits
        "x100000000000000000000y",  # 21 digits: past any fixed padding
        "x00000000000000000000000000123456789012345678901234567890z",  # leading zeros, 54 digits
    )
]
TIED = {"file 007.txt", "file 7.txt"}


@pytest.fixture(scope="module")
async def ids(runtime: Runtime) -> dict[str, str]:
    docs = [
        DirectDocument(
            filename=name, content=f"Notes {i}: the otters came back at dusk.".encode(), metadata={}
        )
        for i, name in enumerate(reversed(NATURAL))
    ]
    found = await ingest_documents_direct(runtime, docs)
    return {doc.filename: str(doc_id) for doc, doc_id in zip(docs, found, strict=True)}


def expected(ids: dict[str, str], descending: bool) -> list[str]:
    """NATURAL (or reversed), its tie ordered by id ascending either way (the listing's tie-break)."""
    names = NATURAL[::-1] if descending else list(NATURAL)
    at = names.index("file 7.txt" if descending else "file 007.txt")
    names[at : at + 2] = sorted(TIED, key=lambda name: ids[name])
    return names


async def listing(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/documents", params={"sort": "name", **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("text", [None, '{"$contains": "otters"}'], ids=["all", "text-filtered"])
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_names_sort_in_natural_order_and_pages_add_up(
    app_client: httpx.AsyncClient, ids: dict[str, str], order: str, text: str | None
) -> None:
    filters = {"order": order, **({"text": text} if text else {})}
    whole = await listing(app_client, limit=100, **filters)
    assert [d["filename"] for d in whole["items"]] == expected(ids, order == "desc")
    assert whole["total"] == len(NATURAL)
    paged: list[str] = []
    for offset in range(0, len(NATURAL), 3):
        page = await listing(app_client, limit=3, offset=offset, **filters)
        assert page["total"] == len(NATURAL)
        paged += [d["id"] for d in page["items"]]
    assert paged == [d["id"] for d in whole["items"]]  # no duplicate, no gap across pages
