"""Chinese, Japanese and Korean words inside a sentence are found by the native BM25 leg (migration 0025:
`rag_bm25_text` splits a run of such characters into characters and pairs, at index and query time), so
are words of a text in decomposed Unicode (NFD, composed by the same function), and
they count as "every word of the query" for the chat's floor. English is tokenised as before. The
migration indexes chunks stored before it again, a pack made before it included; its downgrade gives
back the postings it found."""

from __future__ import annotations

import asyncio
import unicodedata
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
from alembic import command

from rag_server.config import Settings
from rag_server.infra.database import owner_connection
from rag_server.infra.migrations import alembic_config
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.integrity import check_integrity
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.retrieval import bm25_packs
from rag_server.retrieval.bm25 import bm25_leg
from tests.conftest import create_database

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
            " chunk_count) VALUES ('a.md', 'md', 'text/markdown', 1, $1, 'ready', 3) RETURNING id",
            "d" * 64,
        )
        for i, text in enumerate([FILES["手册.md"], FILES["fridge.md"], FILES["prüfung.txt"]]):
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
        text = "L'élève's Kühlschränke: running runners ran, e-mail café 🚀 x-ray 3.5"
        assert await conn.fetchval("SELECT rag_bm25_text($1) = $1", text)
        assert await conn.fetchval("SELECT rag_bm25_text('年假政策')") == " 年 假 政 策 年假 假政 政策 "
