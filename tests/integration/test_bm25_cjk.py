"""Chinese, Japanese and Korean words inside a sentence are found by the native BM25 leg (migration 0025:
`rag_bm25_text` splits a run of such characters into characters and pairs, at index and query time), so
are words of a text in decomposed Unicode (NFD, composed by the same function), and
they count as "every word of the query" for the chat's floor. English is tokenised as before. The
migration indexes chunks stored before it again, a pack made before it included; its downgrade gives
back the postings it found."""

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
from tests.integration.test_bm25_native import assert_matches_reference, insert_document, reference_scores

REVISION, DOWN_REVISION = "0025_bm25_cjk", "0024_stale_replacement_bytes"

FILES = {
    "手册.md": "# 员工手册\n\n公司的年假政策规定每位员工每年享有十五天带薪年假。差旅费用报销必须提交发票。",
    "ガイド.txt": "社内ガイド\n\n東京本社の会議室は予約制です。予約はポータルサイトから行ってください。"
    "富士山の写真は受付に飾られています。",
    "안내.txt": "직원은 학교에서 교육을 받습니다. 휴가 신청은 두 주 전에 해야 합니다.",
    "fridge.md": "# Fridge care\n\nThe refrigerator door seals are checked every six months.",
    # Decomposed (NFD), as macOS writes a file: "o" + U+0308 for "ö".
    "prüfung.txt": unicodedata.normalize("NFD", "Die Größenprüfung übernimmt das Mädchen."),
}
# A word inside a sentence (never a run of its own) -> the document that holds it.
FOUND_IN = {
    "年假": "手册.md",
    "发票": "手册.md",
    "报销": "手册.md",
    "予約": "ガイド.txt",
    "ポータル": "ガイド.txt",
    "会議室": "ガイド.txt",
    "학교": "안내.txt",
    "seal": "fridge.md",
    "Größenprüfung": "prüfung.txt",  # typed composed (NFC)
    unicodedata.normalize("NFD", "Mädchen"): "prüfung.txt",  # pasted decomposed
}


@pytest.fixture(scope="module")
async def documents(runtime: Runtime) -> dict[UUID, str]:
    ids = await ingest_documents_direct(
        runtime, [DirectDocument(name, text.encode(), {}) for name, text in FILES.items()]
    )
    return dict(zip(ids, FILES, strict=True))


async def search(client: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    reply = await client.post("/search", json={"top_k": 10, **body})
    assert reply.status_code == 200, reply.text
    return list(reply.json()["results"])


async def test_a_word_inside_a_cjk_sentence_is_found_by_bm25(
    app_client: httpx.AsyncClient, documents: dict[UUID, str]
) -> None:
    for word, name in FOUND_IN.items():
        hits = await search(app_client, query=word, search_type="bm25")
        assert hits, word
        assert hits[0]["document_name"] == name, (word, hits[0]["document_name"])
    # A word none of them holds finds nothing (its characters do not all appear either).
    assert await search(app_client, query="猫狗", search_type="bm25") == []


async def test_a_decomposed_text_is_stored_composed(
    app_client: httpx.AsyncClient, documents: dict[UUID, str]
) -> None:
    """So "Contains" (exact text) and the web app's highlights find it by a word typed composed."""
    hits = await search(app_client, query="Mädchen", filters={"text": {"$contains": "Größenprüfung"}})
    assert [h["document_name"] for h in hits] == ["prüfung.txt"]
    assert unicodedata.is_normalized("NFC", hits[0]["text"])
    # And by one pasted decomposed: the filter's text is composed as the stored text is.
    pasted = {"$contains": unicodedata.normalize("NFD", "Größenprüfung")}
    hits = await search(app_client, query="Mädchen", filters={"text": pasted})
    assert [h["document_name"] for h in hits] == ["prüfung.txt"]


async def test_a_cjk_query_word_counts_for_the_every_word_floor(
    app_client: httpx.AsyncClient, documents: dict[UUID, str]
) -> None:
    """A cosine of 0.99 is reached by nothing: what stays holds every word of the query."""
    for word, name in [("年假", "手册.md"), ("予約", "ガイド.txt")]:
        hits = await search(app_client, query=word, search_type="hybrid", min_similarity=0.99)
        assert [h["document_name"] for h in hits] == [name], word


async def test_the_chat_quotes_the_sentence_a_japanese_question_is_about(
    app_client: httpx.AsyncClient, documents: dict[UUID, str]
) -> None:
    """No LLM: the extractive answer quotes the sentences holding the question's words (split at 。), and
    no passage that shares none (the Chinese one, which the English model's vector ranks close)."""
    reply = await app_client.post("/query", json={"query": "ポータルサイトで予約できますか？"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["sources"][0]["document_name"] == "ガイド.txt"
    assert body["answer"].splitlines()[1:] == [
        "- 東京本社の会議室は予約制です。予約はポータルサイトから行ってください。 [1] (ガイド.txt)"
    ]


async def test_the_recount_agrees_with_the_triggers(runtime: Runtime, documents: dict[UUID, str]) -> None:
    async with owner_connection(runtime.database_url) as conn:
        report = await check_integrity(conn, runtime.settings.queue_name)
    assert report.ok, report


async def postings(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch("SELECT term, chunk_id, tf, doc_len FROM bm25_postings ORDER BY 1, 2")
    stats = await conn.fetchrow("SELECT n_docs, total_len FROM bm25_stats")
    assert stats is not None
    return [tuple(r) for r in rows] + [tuple(stats)]


async def test_0025_indexes_the_chunks_stored_before_it(pg_server: str, tmp_path: Path) -> None:
    url = await create_database(pg_server, "cjk0025")
    cfg = alembic_config(url, Settings(database_url=url, data_dir=tmp_path))
    await asyncio.to_thread(command.upgrade, cfg, DOWN_REVISION)
    conn = await asyncpg.connect(url)
    try:
        doc_id = await conn.fetchval(
            "INSERT INTO documents (filename, file_type, content_type, size_bytes, sha256, status,"
            " chunk_count) VALUES ('a.md', 'md', 'text/markdown', 1, $1, 'ready', 4) RETURNING id",
            "d" * 64,
        )
        # An imported record of 150,000 varied Han characters: split, a tsvector over PostgreSQL's 1 MB
        # (the re-index, so the migration, failed); over 0025's bound it is composed only, as before.
        big = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(150_000))
        for i, text in enumerate([FILES["手册.md"], FILES["fridge.md"], FILES["prüfung.txt"], big]):
            await conn.execute(
                "INSERT INTO chunks (document_id, chunk_index, text, search_text, embedding)"
                " VALUES ($1, $2, $3, $3, $4::vector)",
                doc_id,
                i,
                text,
                "[" + ",".join(["0.1"] * 384) + "]",
            )
        await bm25_packs.pack(conn)
        before = await postings(conn)
        # One token per run: no posting of the word (this code's query needs the migration's function).
        assert not await conn.fetchval("SELECT count(*) FROM bm25_postings WHERE term = '年假'")

        await asyncio.to_thread(command.upgrade, cfg, REVISION)
        # The pack (its stale copy of the chunk skipped) answers as every posting summed does.
        packed = await bm25_leg(conn, "native", "年假", 5)
        assert len(packed) == 1
        assert packed == await bm25_leg(conn, "native", "年假", 5, prune=False)
        assert len(await bm25_leg(conn, "native", "refrigerator", 5)) == 1
        assert len(await bm25_leg(conn, "native", "Größenprüfung", 5)) == 1
        report = await check_integrity(conn, Settings(database_url=url).queue_name)
        assert report.ok, report

        await asyncio.to_thread(command.downgrade, cfg, DOWN_REVISION)
        assert await postings(conn) == before
        assert not await conn.fetchval("SELECT to_regproc('rag_bm25_text') IS NOT NULL")
        await asyncio.to_thread(command.upgrade, cfg, "head")
    finally:
        await conn.close()


async def test_english_text_is_tokenised_as_before(runtime: Runtime) -> None:
    async with owner_connection(runtime.database_url) as conn:
        text = "The fridge's seals: running runners ran, e-mail 🚀 x-ray 3.5"
        assert await conn.fetchval("SELECT rag_bm25_text($1) = $1", text)
        # Latin accents are folded (0027), the rest as written.
        text = "L'élève's Kühlschränke: running runners ran, e-mail café 🚀 x-ray 3.5"
        assert await conn.fetchval("SELECT rag_bm25_text($1)", text) == (
            "L'eleve's Kuhlschranke: running runners ran, e-mail cafe 🚀 x-ray 3.5"
        )
        assert await conn.fetchval("SELECT rag_bm25_text('年假政策')") == " 年 假 政 策 年假 假政 政策 "


# Sentences a corpus is drawn from: Chinese, Japanese, Korean, German (stored decomposed, NFD), English,
# and mixes; a character of Extension B (U+20BB7, outside the BMP) too.
CORPUS_PARTS = [
    "公司的年假政策规定每位员工每年享有十五天带薪年假。",
    "差旅费用报销必须提交发票。",
    "猫在沙发上睡觉，狗在院子里跑。",
    "年假不能转让给其他员工。",
    "\U00020bb7野家的牛丼很好吃。",
    "東京本社の会議室は予約制です。",
    "予約はポータルサイトから行ってください。",
    "富士山の写真は受付に飾られています。",
    "猫カフェは駅の近くにあります。",
    "직원은 학교에서 교육을 받습니다.",
    "휴가 신청은 두 주 전에 해야 합니다.",
    "학교 식당은 열두 시에 엽니다.",
    unicodedata.normalize("NFD", "Die Größenprüfung übernimmt das Mädchen."),
    unicodedata.normalize("NFD", "Das Mädchen prüft die Kühlschränke."),
    "The refrigerator door seals are checked every six months.",
    "Annual leave (年假) is booked on the portal (ポータル).",
    "Book the meeting room: 予約 required, café on the 3rd floor.",
    "Running connections of proteins in the cells.",
]
CJK_QUERIES = [
    "年假",  # a word inside sentences
    "猫",  # a single character
    "학교",  # Hangul
    "予約 portal 年假 refrigerator",  # mixed scripts
    "会議室の予約",  # a Japanese phrase: its characters and pairs
    unicodedata.normalize("NFD", "Mädchen Größenprüfung"),  # typed decomposed
    "Kühlschränke café",  # typed composed, stored decomposed
    "\U00020bb7野家",  # Extension B
    "年假 年假 年假",  # repeats count once
]


async def assert_cjk_queries_match_reference(conn: asyncpg.Connection) -> int:
    """Every query: the native leg's every hit and score equal the reference's (1e-6), and its top 5 (the
    seeded MaxScore, or the pack when there is one) is the reference's top 5."""
    matched = 0
    for query in CJK_QUERIES:
        matched += await assert_matches_reference(conn, query, 1.2, 0.75)
        expected = await reference_scores(conn, query)
        top = await bm25_leg(conn, "native", query, 5)
        assert [h.chunk_id for h in top] == ranked(expected, 5), query
        assert [h.score for h in top] == pytest.approx([expected[h.chunk_id] for h in top], abs=1e-6)
    await assert_matches_reference(conn, CJK_QUERIES[3], 2.0, 0.3)
    return matched


async def test_cjk_and_decomposed_scores_equal_the_reference_bm25(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference tokenises its own Python transform's text (bm25_reference.bm25_text, not the SQL
    function): the engine's characters, pairs and composition agree with it, through the full statement,
    the seeded MaxScore and the pack (with chunks written after it)."""
    monkeypatch.setattr(bm25_native, "SEED_POSTINGS", 8)
    rng = random.Random(25)
    async with owner_connection(runtime.database_url) as conn:
        for _ in range(6):  # 36 chunks of one to three sentences
            texts = [" ".join(rng.sample(CORPUS_PARTS, rng.randint(1, 3))) for _ in range(6)]
            await insert_document(conn, texts, rng)
        # The SQL function and the Python transform write the same text, chunk by chunk.
        rows = await conn.fetch("SELECT search_text, rag_bm25_text(search_text) AS t FROM chunks")
        assert [r["t"] for r in rows] == [bm25_text(r["search_text"]) for r in rows]

        assert await assert_cjk_queries_match_reference(conn) > 60
        for threshold in (bm25_native.FULL_MAX_POSTINGS, 0):  # the full statement, then MaxScore
            monkeypatch.setattr(bm25_native, "FULL_MAX_POSTINGS", threshold)
            await assert_cjk_queries_match_reference(conn)

        await bm25_packs.pack(conn)
        assert await conn.fetchval("SELECT watermark FROM bm25_pack") == await conn.fetchval(
            "SELECT max(id) FROM chunks"
        )
        await assert_cjk_queries_match_reference(conn)
        # After the pack: a chunk added and a packed one changed (its stale packed copy is skipped).
        await insert_document(conn, [CORPUS_PARTS[0] + CORPUS_PARTS[2], CORPUS_PARTS[13]], rng)
        changed = await conn.fetchval("SELECT min(id) FROM chunks")
        await conn.execute("UPDATE chunks SET search_text = $2 WHERE id = $1", changed, "猫 年假 学校 학교")
        assert await conn.fetchval("SELECT count(*) FROM bm25_unpacked") > 0
        await assert_cjk_queries_match_reference(conn)

        # `rag-server check`'s BM25 recount and pack checks agree (these documents' chunk_count is not set:
        # insert_document's direct INSERT, which the "chunk indexes" check reports).
        report = await check_integrity(conn, runtime.settings.queue_name)
        assert [v for v in report.violations if v.check.startswith("bm25")] == [], report


# Not composed (NFC) and holding no character of 0025's slow-path class: Greek typed with oxia (U+1F71 for
# U+03AC), Arabic alef + a combining madda (U+0653), Devanagari na + nukta (U+093C), Hebrew dagesh typed
# before the vowel (NFC orders them by combining class). rag_bm25_text leaves them as they are; the query
# is composed before it reaches SQL (retrieval.legs.clean_query), as chunks are at parse time.
UNCOMPOSED = [
    "\u1f00\u03b3\u1f71\u03c0\u03b7",
    "\u0627\u0653\u0645\u0646",
    "\u0928\u093c\u092f\u093e",
    "\u05d1\u05bc\u05b0\u05e8\u05d0\u05e9\u05d9\u05ea",
]


@pytest.mark.parametrize("query", UNCOMPOSED)
async def test_a_query_uncomposed_outside_the_slow_class_finds_the_chunk_stored_composed(
    runtime: Runtime, query: str
) -> None:
    composed = unicodedata.normalize("NFC", query)
    assert composed != query
    async with owner_connection(runtime.database_url) as conn:
        await insert_document(conn, [f"{composed} filler"], random.Random(26))
        assert await assert_matches_reference(conn, query, 1.2, 0.75) == 1, query
