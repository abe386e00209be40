"""Latin accents are folded by the native BM25 leg (migration 0027: `rag_bm25_text` folds as Lucene's
ASCIIFoldingFilter does, at index and query time): `eleve` finds `élève`, `Strasse` finds `Straße`, and a
query typed with accents finds a text written without. The chat's every-word check folds alike. Other
scripts are untouched (Cyrillic й, Devanagari). The migration indexes again the chunks stored before it
that hold such letters, and only those; its downgrade gives back the postings it found."""

from __future__ import annotations

import asyncio
import random
import unicodedata
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
from alembic import command

from rag_server.config import Settings
from rag_server.evaluation.bm25_reference import bm25_text, ranked
from rag_server.infra.database import owner_connection
from rag_server.infra.migrations import alembic_config
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.integrity import check_integrity
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.retrieval import bm25_native, bm25_packs
from rag_server.retrieval.bm25 import bm25_leg
from tests.conftest import create_database
from tests.integration.test_bm25_cjk import search
from tests.integration.test_bm25_native import assert_matches_reference, insert_document, reference_scores

REVISION, DOWN_REVISION = "0027_bm25_ascii_folding", "0026_bm25_deferred_write"

FILES = {
    "ecole.md": "# Règlement\n\nL'élève présente sa carte à l'entrée de l'école.",
    "informe.txt": "La información del año está en la página del ayuntamiento.",
    "strasse.txt": "Die Straße vor dem Rathaus wird im Frühjahr gesperrt.",
    "cafe.txt": "The cafe near the station serves creme brulee until noon.",
    "forlag.txt": "Förlaget i Łódź och Ærøskøbing tryckte Œuvres complètes på Þingvellir.",
    "fridge.md": "# Fridge care\n\nThe refrigerator door seals are checked every six months.",
    "russian.txt": "Йод и йогурт лежат в холодильнике.",
    "hindi.txt": "हिन्दी भाषा में नियम लिखे गए हैं।",
}
# Typed without accents -> the accented text; typed with them -> the text written without.
FOUND_IN = {
    "eleve": "ecole.md",
    "ELEVE ecole": "ecole.md",
    "informacion": "informe.txt",
    "pagina ano": "informe.txt",
    "Strasse": "strasse.txt",
    "Fruhjahr": "strasse.txt",
    "café": "cafe.txt",
    "crème brûlée": "cafe.txt",
    "Lodz": "forlag.txt",
    "aeroskobing": "forlag.txt",
    "oeuvres": "forlag.txt",
    "thingvellir": "forlag.txt",
    unicodedata.normalize("NFD", "élève"): "ecole.md",  # pasted decomposed
    "йогурт": "russian.txt",
    "हिन्दी": "hindi.txt",
}
# Other scripts keep their marks: й is not и.
NOT_FOUND = ["иогурт"]


@pytest.fixture(scope="module")
async def documents(runtime: Runtime) -> dict[UUID, str]:
    ids = await ingest_documents_direct(
        runtime, [DirectDocument(name, text.encode(), {}) for name, text in FILES.items()]
    )
    return dict(zip(ids, FILES, strict=True))


async def test_a_word_is_found_by_bm25_typed_with_or_without_its_accents(
    app_client: httpx.AsyncClient, documents: dict[UUID, str]
) -> None:
    for query, name in FOUND_IN.items():
        hits = await search(app_client, query=query, search_type="bm25")
        assert [h["document_name"] for h in hits] == [name], query
    for query in NOT_FOUND:
        assert await search(app_client, query=query, search_type="bm25") == [], query


async def test_an_unaccented_query_word_counts_for_the_every_word_floor(
    app_client: httpx.AsyncClient, documents: dict[UUID, str]
) -> None:
    """A cosine of 0.99 is reached by nothing: what stays holds every word of the query, folded."""
    for query, name in [
        ("eleve ecole", "ecole.md"),
        ("Strasse Fruhjahr", "strasse.txt"),
        ("café", "cafe.txt"),
    ]:
        hits = await search(app_client, query=query, search_type="hybrid", min_similarity=0.99)
        assert [h["document_name"] for h in hits] == [name], query
    # A word the text does not hold still drops it.
    assert await search(app_client, query="eleve Strasse", search_type="hybrid", min_similarity=0.99) == []


async def test_a_pdfs_ligatures_are_spelled_out_so_their_words_are_found(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    """PDF text extraction gives "\ufb01nancial" where the font drew one glyph for "fi" (text.canonical)."""
    text = "The \ufb01nancial report shows cash \ufb02ows of the o\ufb03ce."
    [doc_id] = await ingest_documents_direct(runtime, [DirectDocument("ligatures.txt", text.encode(), {})])
    for query in ["financial", "flows office", "\ufb01nancial"]:  # the last pasted from the PDF
        hits = await search(app_client, query=query, search_type="bm25")
        assert [h["document_id"] for h in hits] == [str(doc_id)], query
    chunks = (await app_client.get(f"/documents/{doc_id}/chunks")).json()["items"]
    assert [c["text"] for c in chunks] == ["The financial report shows cash flows of the office."]


async def test_the_recount_agrees_with_the_triggers(runtime: Runtime, documents: dict[UUID, str]) -> None:
    async with owner_connection(runtime.database_url) as conn:
        report = await check_integrity(conn, runtime.settings.queue_name)
    assert report.ok, report


# Every letter of the blocks 0027 folds, a few of other scripts, the Angstrom sign, text over the split bound.
SAMPLES = [
    "".join(chr(c) for c in range(0x00A0, 0x0250)),
    "".join(chr(c) for c in range(0x1E00, 0x1F00)),
    "Йй Ёё Ўў ΐ ά ῶ ח֫ب ँ़ ก้ 年假 \u212bngstr\u00f6m " + unicodedata.normalize("NFD", "Mädchen ǖ Ǿ ệ"),
    "Ærøskøbing " * 2500,
    # Marks no letter composes with: dropped after a Latin letter, kept elsewhere.
    "x\u0301y \u0142\u0301 \u00e9\u0301\u0308 1\u0301 \u0436\u0301 \u00c6\u0301 q\u0323\u031b",
]


async def test_the_function_folds_as_the_reference_says_and_leaves_other_scripts(runtime: Runtime) -> None:
    """The SQL function (its letter list) and the reference's rule (decompositions and a short list)
    write the same text; ASCII is returned as it is; й, Greek, Hebrew, Arabic, Devanagari, Thai stay."""
    async with owner_connection(runtime.database_url) as conn:
        for sample in SAMPLES:
            assert await conn.fetchval("SELECT rag_bm25_text($1)", sample) == bm25_text(sample), sample[:40]
        folded = await conn.fetchval("SELECT rag_bm25_text('Straße Ærø œuvre þing ŉ')")
        assert folded == "Strasse AEro oeuvre thing n"
        others = "Йод ёлка ΐά שָׁלוֹם العَرَبِيَّة हिन्दी क़ ภาษาไทย"
        assert await conn.fetchval("SELECT rag_bm25_text($1)", others) == others
        english = "The fridge's door-seal (x-ray) 3.5 e-mail: running runners ran ~ {}"
        assert await conn.fetchval("SELECT rag_bm25_text($1) = $1", english)


async def test_the_function_means_the_same_with_standard_conforming_strings_off(runtime: Runtime) -> None:
    """A SQL function's body is parsed in the calling session, at its first call there: 0025's backslash
    escapes read otherwise with standard_conforming_strings off ('\\1' is then the character U+0001), and
    such a session indexed other words."""
    samples = [*SAMPLES, "x\u0301 élève Straße 年假政策 Größe"]
    async with owner_connection(runtime.database_url) as conn:
        expected = [await conn.fetchval("SELECT rag_bm25_text($1)", sample) for sample in samples]
    async with owner_connection(runtime.database_url) as conn:  # a session that has not called it yet
        await conn.execute("SET standard_conforming_strings = off")
        assert [await conn.fetchval("SELECT rag_bm25_text($1)", sample) for sample in samples] == expected


# Sentences a corpus is drawn from: French, Spanish, German, with and without their accents, some stored
# decomposed (NFD), and English.
CORPUS_PARTS = [
    "L'élève présente sa carte à l'entrée de l'école.",
    "L'eleve presente sa carte a l'entree de l'ecole.",
    "La información del año está en la página web.",
    "La informacion del ano esta en la pagina web.",
    unicodedata.normalize("NFD", "Die Straße vor dem Rathaus wird im Frühjahr gesperrt."),
    "Die Strasse vor dem Rathaus wird im Fruhjahr gesperrt.",
    "Le café et la crème brûlée coûtent cinq euros.",
    "Größenprüfung der Kühlschränke: Mädchen für alles.",
    "Ação e coração: a informação não é estática.",
    "The refrigerator door seals are checked every six months.",
    "Œuvres complètes, Łódź, Ærøskøbing, Þingvellir.",
]
FOLD_QUERIES = [
    "eleve ecole",
    "élève école",
    "informacion pagina",
    "información página año",
    "Strasse Fruhjahr",
    unicodedata.normalize("NFD", "Straße Frühjahr"),
    "cafe creme brulee",
    "Grossenprufung Kuhlschranke",
    "acao coracao informacao",
    "oeuvres lodz aeroskobing thingvellir",
    "refrigerator seals café",
]


async def assert_fold_queries_match_reference(conn: asyncpg.Connection) -> int:
    matched = 0
    for query in FOLD_QUERIES:
        matched += await assert_matches_reference(conn, query, 1.2, 0.75)
        expected = await reference_scores(conn, query)
        top = await bm25_leg(conn, "native", query, 5)
        assert [h.chunk_id for h in top] == ranked(expected, 5), query
        assert [h.score for h in top] == pytest.approx([expected[h.chunk_id] for h in top], abs=1e-6)
    return matched


async def test_folded_scores_equal_the_reference_bm25(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference folds by its own rule (bm25_reference.fold): the engine's every score equals it,
    through the full statement, the seeded MaxScore and the pack (with chunks written after it)."""
    monkeypatch.setattr(bm25_native, "SEED_POSTINGS", 8)
    rng = random.Random(27)
    async with owner_connection(runtime.database_url) as conn:
        for _ in range(6):
            texts = [" ".join(rng.sample(CORPUS_PARTS, rng.randint(1, 3))) for _ in range(6)]
            await insert_document(conn, texts, rng)
        rows = await conn.fetch("SELECT search_text, rag_bm25_text(search_text) AS t FROM chunks")
        assert [r["t"] for r in rows] == [bm25_text(r["search_text"]) for r in rows]

        assert await assert_fold_queries_match_reference(conn) > 60
        for threshold in (bm25_native.FULL_MAX_POSTINGS, 0):
            monkeypatch.setattr(bm25_native, "FULL_MAX_POSTINGS", threshold)
            await assert_fold_queries_match_reference(conn)
        await bm25_packs.pack(conn)
        await assert_fold_queries_match_reference(conn)
        await insert_document(conn, [CORPUS_PARTS[0], CORPUS_PARTS[4]], rng)
        changed = await conn.fetchval("SELECT min(id) FROM chunks")
        await conn.execute("UPDATE chunks SET search_text = $2 WHERE id = $1", changed, "élève Straße año")
        await assert_fold_queries_match_reference(conn)
        report = await check_integrity(conn, runtime.settings.queue_name)
        assert [v for v in report.violations if v.check.startswith("bm25")] == [], report


async def postings(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch("SELECT term, chunk_id, tf, doc_len FROM bm25_postings ORDER BY 1, 2")
    stats = await conn.fetchrow("SELECT n_docs, total_len FROM bm25_stats")
    terms = await conn.fetch("SELECT term, df FROM bm25_terms ORDER BY 1")
    assert stats is not None
    return [tuple(r) for r in rows] + [tuple(stats)] + [tuple(t) for t in terms]


async def insert_chunk(conn: asyncpg.Connection, doc_id: UUID, index: int, text: str) -> int:
    """A chunk as the database had it before 0027 (its triggers index it with the function of the day)."""
    return int(
        await conn.fetchval(
            "INSERT INTO chunks (document_id, chunk_index, text, search_text, embedding)"
            " VALUES ($1, $2, $3, $3, $4::vector) RETURNING id",
            doc_id,
            index,
            text,
            "[" + ",".join(["0.1"] * 384) + "]",
        )
    )


async def test_0027_indexes_again_the_chunks_holding_accents_and_only_those(
    pg_server: str, tmp_path: Path
) -> None:
    url = await create_database(pg_server, "fold0027")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, DOWN_REVISION)
    conn = await asyncpg.connect(url)
    try:
        doc_id = await conn.fetchval(
            "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status,"
            " chunk_count) VALUES ('a.md', 'md', 'text/markdown', 1, $1, 'ready', 6) RETURNING id",
            "e" * 64,
        )
        texts = [
            FILES["ecole.md"],  # accented
            FILES["fridge.md"],  # ASCII
            unicodedata.normalize("NFD", FILES["strasse.txt"]),  # decomposed: ü folds once composed
            FILES["russian.txt"],  # non-ASCII, nothing to fold
            "\u212bngstr\u00f6m units",  # the Angstrom sign composes to Å
            "Ærøskøbing " * 2500,  # over 0025's split bound: composed and folded
        ]
        ids = [await insert_chunk(conn, doc_id, i, text) for i, text in enumerate(texts)]
        await bm25_packs.pack(conn)
        before = await postings(conn)
        assert not await conn.fetchval("SELECT count(*) FROM bm25_postings WHERE term = 'elev'")
        assert not await conn.fetchval("SELECT count(*) FROM bm25_unpacked")

        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        # Re-indexed: the chunks whose text folds, noted unpacked (the pack's copy is stale); not the others.
        unpacked = await conn.fetch("SELECT chunk_id FROM bm25_unpacked ORDER BY 1")
        assert [r["chunk_id"] for r in unpacked] == [ids[0], ids[2], ids[4], ids[5]]
        for query, chunk in [
            ("eleve", ids[0]),
            ("Strasse", ids[2]),
            ("angstrom", ids[4]),
            ("aeroskobing", ids[5]),
        ]:
            packed = await bm25_leg(conn, "native", query, 5)
            assert packed == await bm25_leg(conn, "native", query, 5, prune=False), query
            assert [h.chunk_id for h in packed] == [chunk], query
        assert [h.chunk_id for h in await bm25_leg(conn, "native", "refrigerator", 5)] == [ids[1]]
        report = await check_integrity(conn, Settings(database_url=url).queue_name)
        assert report.ok, report

        await asyncio.to_thread(command.downgrade, cfg, DOWN_REVISION)
        assert await postings(conn) == before
        assert await conn.fetchval("SELECT rag_bm25_text('élève')") == "élève"
        await asyncio.to_thread(command.upgrade, cfg, "head")
    finally:
        await conn.close()


async def test_0027_does_not_index_again_a_chunk_deleted_while_it_waits_for_the_writers_mutex(
    pg_server: str, tmp_path: Path
) -> None:
    """A delete in flight during the upgrade (an older API or worker still running): its triggers hold the
    writers' mutex, the upgrade has already read the chunk (uncommitted delete: still visible) and waits
    for the mutex; once the delete commits, the re-index must not put the deleted chunk's postings back
    (a phantom chunk in the postings, df and total_len counting it, `rag-server check` failing)."""
    url = await create_database(pg_server, "fold0027race")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, DOWN_REVISION)
    conn = await asyncpg.connect(url)
    deleter = await asyncpg.connect(url)
    try:
        doc_id = await conn.fetchval(
            "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status,"
            " chunk_count) VALUES ('a.md', 'md', 'text/markdown', 1, $1, 'ready', 2) RETURNING id",
            "f" * 64,
        )
        ids = [
            await insert_chunk(conn, doc_id, i, text)
            for i, text in enumerate([FILES["ecole.md"], FILES["fridge.md"]])
        ]
        deleting = deleter.transaction()
        await deleting.start()
        await deleter.execute("DELETE FROM chunks WHERE id = $1", ids[0])  # triggers: the mutex, held

        upgrade = asyncio.create_task(asyncio.to_thread(command.upgrade, cfg, REVISION))
        for _ in range(2400):
            if await conn.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%DO $do$%'"
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the upgrade's re-index never waited for the delete")
        await deleting.commit()
        await upgrade

        assert await conn.fetchval("SELECT count(*) FROM bm25_postings WHERE chunk_id = $1", ids[0]) == 0
        report = await check_integrity(conn, Settings(database_url=url).queue_name)
        assert [v for v in report.violations if v.check.startswith("bm25")] == [], report
    finally:
        await deleter.close()
        await conn.close()
