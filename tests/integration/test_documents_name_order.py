"""GET /documents?sort=name: natural order, as file managers give it (digit runs compared as numbers,
case and Latin accents ignored, ties by id), the same with or without a text filter, in both directions,
and pages that add up to the whole list.

Plain text order put "a10" before "a2" and "chapter 10.pdf" before "chapter 2.pdf" (migration 0022:
`documents.name_key`); a byte order of the name put "Émile.pdf" after "Zeta.pdf" (0033: the key folds
accents as BM25 does). Other scripts keep their order among themselves, after the Latin names."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct

# Ascending natural order, a group per key: the names of a group tie ("file 007" and "file 7" are one
# number, "école" is "ecole"), their order is their ids'.
GROUPS = [
    tuple(f"{stem}.txt" for stem in group)
    for group in (
        ("0",),
        ("a2",),
        ("À3",),  # à is a
        ("a10",),
        ("b",),
        ("chapter 2",),
        ("Chapter 9",),
        ("chapter 10",),
        ("ecole", "école", "École"),
        ("Émile",),
        ("file 007", "file 7"),
        ("file 8",),
        ("Łódź",),  # Ł is L
        ("Ørsted 2",),  # Ø is o
        ("orsted 10",),
        ("Straße 1",),  # ß is ss
        ("strasse 2",),
        ("x99999999999999999999y",),  # 20 digits
        ("x100000000000000000000y",),  # 21 digits: past any fixed padding
        ("x00000000000000000000000000123456789012345678901234567890z",),  # leading zeros, 54 digits
        ("Zeta",),
        ("Ωmega",),  # Greek (U+03C9 once lowered), then Cyrillic, then CJK: their UTF-8 bytes, as before
        ("ёлка",),
        ("東京",),
    )
]
NATURAL = [name for group in GROUPS for name in group]


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
    """The groups in order (or reversed), each group's names by id ascending either way (the listing's
    tie-break)."""
    groups = GROUPS[::-1] if descending else GROUPS
    return [name for group in groups for name in sorted(group, key=lambda name: ids[name])]


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
