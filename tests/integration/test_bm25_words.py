"""The native BM25 leg finds a number after a hyphen and the words of a URL, a host, an e-mail address
and a file path (migration 0028: `rag_bm25_text` spaces them out, at index and query time), as
ParadeDB's `simple` tokenizer does in production. PostgreSQL's parser read `FY-2024` as `fy` and the
signed `-2024`, and a URL, host, address or path as whole tokens. A decimal or version number stays one
word (`10.5`, `v2.3.1`), and so does a lone signed number (`-20`). The chat's every-word check and the
recount read the same function. The migration indexes again the chunks stored before it whose text it
changes, and only those; its downgrade gives back the postings it found."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from uuid import UUID

import asyncpg
import httpx
import pytest
from alembic import command

from rag_server.config import Settings
from rag_server.evaluation.bm25_reference import bm25_text
from rag_server.infra.database import owner_connection
from rag_server.infra.migrations import alembic_config
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.integrity import check_integrity
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.retrieval import bm25_packs
from rag_server.retrieval.bm25 import bm25_leg
from tests.conftest import create_database
from tests.integration.test_bm25_cjk import search
from tests.integration.test_bm25_folding import insert_chunk, postings
from tests.integration.test_bm25_native import assert_matches_reference, insert_document

REVISION, DOWN_REVISION = "0028_bm25_split_words", "0027_bm25_ascii_folding"

FILES = {
    "n1.txt": "The FY-2024 budget follows the COVID-19 rules and the ISO-9001 audit.",
    "n2.md": "# Setup\n\nRead https://docs.widgetco.com/guide/install-steps.html before you start.",
    "n3.txt": "Write to jane.doe@example.com for access.",
    "n4.txt": "Errors go to /var/log/app_server.log every night.",
    "n5.txt": "Images are served by the mirror downloads.fabrikam.net today.",
    "n6.txt": "Prices rose 10.5% in the third quarter; release v2.3.1 fixed the totals.",
    "n7.txt": "Keep the samples at -20 degrees.",
    # HTML quoted in a document: PostgreSQL's parser skips a script's or style's content up to its closing
    # tag, so `</script>` must stay whole (split at its `/`, every word after it was lost: QA).
    "n8.html.txt": "Embed <script>track()</script> then the zebrafish widget, <style>p{}</style> styled.",
}
FOUND_IN = {
    # A number after a hyphen that follows a letter or digit.
    "2024": "n1.txt",
    "19": "n1.txt",
    "9001 audit": "n1.txt",
    "FY-2024": "n1.txt",
    "COVID-19": "n1.txt",
    "fy 2024": "n1.txt",
    # The words of a URL, its host and path; the whole URL as a query too.
    "install": "n2.md",
    "widgetco": "n2.md",
    "guide steps": "n2.md",
    # An e-mail address.
    "jane": "n3.txt",
    "example": "n3.txt",
    "doe example": "n3.txt",
    # A file path.
    "app_server": "n4.txt",
    "server log": "n4.txt",
    # A bare host.
    "fabrikam": "n5.txt",
    # Decimal and version numbers stay one word; so does a lone signed number.
    "10.5": "n6.txt",
    "10.5%": "n6.txt",
    "v2.3.1": "n6.txt",
    "-20": "n7.txt",
    # The words after a quoted script or style.
    "zebrafish widget": "n8.html.txt",
    "styled": "n8.html.txt",
}
# Written whole, their text first (their `com`, `log` are in others too).
FIRST_FOR = {
    "docs.widgetco.com": "n2.md",
    "https://docs.widgetco.com/guide/install-steps.html": "n2.md",
    "jane.doe@example.com": "n3.txt",
    "/var/log/app_server.log": "n4.txt",
    "downloads.fabrikam.net": "n5.txt",
}
NOT_FOUND = ["10", "2.3", "20"]


@pytest.fixture(scope="module")
async def documents(runtime: Runtime) -> dict[UUID, str]:
    ids = await ingest_documents_direct(
        runtime, [DirectDocument(name, text.encode(), {}) for name, text in FILES.items()]
    )
    return dict(zip(ids, FILES, strict=True))


async def test_numbers_after_a_hyphen_and_the_words_of_urls_addresses_and_paths_are_found(
    app_client: httpx.AsyncClient, documents: dict[UUID, str]
) -> None:
    for query, name in FOUND_IN.items():
        hits = await search(app_client, query=query, search_type="bm25")
        assert [h["document_name"] for h in hits] == [name], query
    for query, name in FIRST_FOR.items():
        hits = await search(app_client, query=query, search_type="bm25")
        assert hits and hits[0]["document_name"] == name, query
    for query in NOT_FOUND:
        assert await search(app_client, query=query, search_type="bm25") == [], query


async def test_such_a_word_counts_for_the_every_word_floor(
    app_client: httpx.AsyncClient, documents: dict[UUID, str]
) -> None:
    """A cosine of 0.99 is reached by nothing: what stays holds every word of the query, split alike."""
    for query, name in [
        ("2024 budget", "n1.txt"),
        ("install guide", "n2.md"),
        ("jane example", "n3.txt"),
        ("app_server log", "n4.txt"),
        ("FY-2024", "n1.txt"),
        ("jane.doe@example.com", "n3.txt"),
    ]:
        hits = await search(app_client, query=query, search_type="hybrid", min_similarity=0.99)
        assert [h["document_name"] for h in hits] == [name], query
    # A word the text does not hold still drops it, and 10 is not a word of 10.5.
    assert await search(app_client, query="jane install", search_type="hybrid", min_similarity=0.99) == []
    assert await search(app_client, query="10", search_type="hybrid", min_similarity=0.99) == []


async def test_the_recount_agrees_with_the_triggers(runtime: Runtime, documents: dict[UUID, str]) -> None:
    async with owner_connection(runtime.database_url) as conn:
        report = await check_integrity(conn, runtime.settings.queue_name)
    assert report.ok, report


# Texts the rules meet, and texts they leave alone; the reference (bm25_reference.split_words) says the same.
SAMPLES = {
    "FY-2024 COVID-19 1-2-3 x-5y 2024-01-15": "FY 2024 COVID 19 1 2 3 x 5y 2024 01 15",
    "https://docs.example.com/guide/install-steps.html": "https:  docs example com guide install-steps html",
    "jane.doe@example.com": "jane doe example com",
    "/var/log/app_server.log and C:\\tmp\\a.txt": " var log app_server log and C:\\tmp\\a txt",
    "example2.com e.g. Fig.3 1.Intro": "example2 com e g. Fig 3 1 Intro",
    # Kept: decimals, versions, a lone sign, a hyphen before a letter, a sentence's full stop.
    "10.5% v2.3.1 3.14 -5 (-5) x--5 x-ray e-mail: The end. Next": (
        "10.5% v2.3.1 3.14 -5 (-5) x--5 x-ray e-mail: The end. Next"
    ),
    # After folding: the accented letter before the dot is a letter.
    "café.example.org élève-2": "cafe example org eleve 2",
}


async def test_the_function_splits_as_the_reference_says(runtime: Runtime) -> None:
    async with owner_connection(runtime.database_url) as conn:
        for sample, expected in SAMPLES.items():
            assert await conn.fetchval("SELECT rag_bm25_text($1)", sample) == expected, sample
            assert bm25_text(sample) == expected, sample
        # A CJK run is spaced out first: the hyphen after it then starts a signed number.
        for sample in ["年假-2024 政策.example", "x.年 ю.рф Ω-1"]:
            assert await conn.fetchval("SELECT rag_bm25_text($1)", sample) == bm25_text(sample), sample


PARTS = [
    "The FY-2024 report covers COVID-19 cases.",
    "See https://docs.example.com/guide/install-steps.html for setup.",
    "Contact jane.doe@example.com or ops@example.org today.",
    "Logs: /var/log/app_server.log and /var/log/worker.log.",
    "Rates of 10.5% and 3.14 in release v2.3.1 at -5 degrees.",
    "The mirror downloads.example.net holds ISO-9001 files.",
]
QUERIES = ["2024", "install guide", "jane example", "app_server log", "10.5 v2.3.1", "example net 9001", "-5"]


async def test_split_scores_equal_the_reference_bm25(runtime: Runtime) -> None:
    rng = random.Random(28)
    async with owner_connection(runtime.database_url) as conn:
        for _ in range(5):
            await insert_document(
                conn, [" ".join(rng.sample(PARTS, rng.randint(1, 3))) for _ in range(4)], rng
            )
        rows = await conn.fetch("SELECT search_text, rag_bm25_text(search_text) AS t FROM chunks")
        assert [r["t"] for r in rows] == [bm25_text(r["search_text"]) for r in rows]
        for query in QUERIES:
            assert await assert_matches_reference(conn, query, 1.2, 0.75) > 0, query


async def test_0028_indexes_again_the_chunks_it_splits_and_only_those(pg_server: str, tmp_path: Path) -> None:
    url = await create_database(pg_server, "split0028")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, DOWN_REVISION)
    conn = await asyncpg.connect(url)
    try:
        doc_id = await conn.fetchval(
            "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status,"
            " chunk_count) VALUES ('a.md', 'md', 'text/markdown', 1, $1, 'ready', 7) RETURNING id",
            "a" * 64,
        )
        texts = [
            FILES["n1.txt"],  # FY-2024
            "Prices rose 10.5% in release v2.3.1, at -20 degrees; e-mail: the end.",  # unchanged
            FILES["n2.md"],  # a URL
            FILES["n3.txt"],  # an e-mail address
            "Le café.example.org répond.",  # accented: split once folded
            FILES["n4.txt"],  # a file path
            "The refrigerator door seals are checked every six months.",  # unchanged
        ]
        ids = [await insert_chunk(conn, doc_id, i, text) for i, text in enumerate(texts)]
        await bm25_packs.pack(conn)
        before = await postings(conn)
        assert not await conn.fetchval("SELECT count(*) FROM bm25_postings WHERE term = '2024'")

        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        # Re-indexed: the chunks whose text is split, noted unpacked (the pack is stale there); no other.
        unpacked = await conn.fetch("SELECT chunk_id FROM bm25_unpacked ORDER BY 1")
        assert [r["chunk_id"] for r in unpacked] == [ids[0], ids[2], ids[3], ids[4], ids[5]]
        for query, chunk in [
            ("2024", ids[0]),
            ("install", ids[2]),
            ("jane", ids[3]),
            ("cafe", ids[4]),
            ("app_server", ids[5]),
            ("10.5", ids[1]),
            ("refrigerator", ids[6]),
        ]:
            packed = await bm25_leg(conn, "native", query, 5)
            assert packed == await bm25_leg(conn, "native", query, 5, prune=False), query
            assert [h.chunk_id for h in packed] == [chunk], query
        report = await check_integrity(conn, Settings(database_url=url).queue_name)
        assert report.ok, report

        await asyncio.to_thread(command.downgrade, cfg, DOWN_REVISION)
        assert await postings(conn) == before
        assert await conn.fetchval("SELECT rag_bm25_text('FY-2024 a@b.c')") == "FY-2024 a@b.c"
        await asyncio.to_thread(command.upgrade, cfg, "head")
    finally:
        await conn.close()
