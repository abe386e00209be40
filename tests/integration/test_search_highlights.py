"""`highlight: true` on POST /search: each hit says where its text holds a word the query matched, as the
BM25 leg reads words (PostgreSQL's English stemmer, accents folded, CJK by characters, stop words out),
so a client marks exactly those words and never a piece of another one."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from starlette.testclient import TestClient

from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.retrieval.highlights import word_spans

DOCS = {
    "leave.txt": "Employees get 25 vacation days. Unused vacations carry over; the statement of the "
    "state of leave is sent each January.",
    "streets.txt": "Die Hauptstraße kreuzt die Strasse am Markt; die Straße ist im Frühjahr gesperrt.",
    "fiscal.txt": "Results for FY-2024 were 10.5% above the 2024 target; contact jane.doe@example.com.",
    "policy.txt": "公司的年假政策：员工每年享有年假。 Emoji \U0001f600 before the policy word.",
    "release.txt": "Release v2.3.1 (build 2.5e3) moved the offset to -7 and the gain to +3 after FY-2024.",
}


@pytest.fixture(scope="module")
async def doc_ids(runtime: Runtime) -> dict[str, UUID]:
    docs = [DirectDocument(name, text.encode(), {}) for name, text in DOCS.items()]
    return dict(zip(DOCS, await ingest_documents_direct(runtime, docs), strict=True))


@pytest.fixture(scope="module")
def client(sync_app_client: TestClient, doc_ids: dict[str, UUID]) -> TestClient:
    return sync_app_client


def marked(client: TestClient, query: str, name: str, **body: Any) -> list[str]:
    """The words marked in `name`'s best hit for `query` (BM25 unless said)."""
    reply = client.post(
        "/search", json={"query": query, "search_type": "bm25", "highlight": True, "top_k": 10, **body}
    )
    assert reply.status_code == 200, reply.text
    hits = [hit for hit in reply.json()["results"] if hit["document_name"] == name]
    assert hits, reply.json()
    text, spans = hits[0]["text"], hits[0]["highlights"]
    assert spans == sorted(spans)
    return [text[start:end] for start, end in spans]


def test_a_word_is_marked_with_its_inflections_and_not_inside_another(client: TestClient) -> None:
    # The stemmer: "vacation" is "vacations"; "state" is not "statement" (another word to BM25).
    assert marked(client, "vacation state", "leave.txt") == ["vacation", "vacations", "state"]


def test_accents_are_folded_and_a_compound_is_not_its_part(client: TestClient) -> None:
    assert marked(client, "strasse fruhjahr", "streets.txt") == ["Strasse", "Straße", "Frühjahr"]


def test_stop_words_are_never_marked(client: TestClient) -> None:
    assert marked(client, "the vacation of the state", "leave.txt") == ["vacation", "vacations", "state"]


def test_numbers_are_words_as_postgres_reads_them(client: TestClient) -> None:
    # A decimal is one word: "10" is not marked inside "10.5".
    assert marked(client, "2024 10", "fiscal.txt") == ["2024", "2024"]
    assert marked(client, "10.5", "fiscal.txt") == ["10.5"]


def test_a_version_a_signed_number_and_a_number_with_an_exponent_are_marked_as_bm25_found_them(
    client: TestClient,
) -> None:
    # PostgreSQL reads `v2.3.1`, `2.5e3`, `-7` and `+3` whole: BM25 finds each by it written so, and its
    # hit must show where (they were cut at the dot or left without their sign, and nothing was marked).
    assert marked(client, "v2.3.1", "release.txt") == ["v2.3.1"]
    assert marked(client, "2.5e3", "release.txt") == ["2.5e3"]
    assert marked(client, "-7 +3", "release.txt") == ["-7", "+3"]
    # A hyphen after a letter or digit is no sign (0028): FY-2024 is FY and 2024.
    assert marked(client, "2024", "release.txt") == ["2024"]


def test_offsets_count_code_points_and_cjk_characters_are_words(client: TestClient) -> None:
    # The emoji is one code point (two UTF-16 units): "policy" after it is still found at its place.
    # BM25 reads 年 alone too (characters and pairs): it is marked in 每年 ("every year") as well.
    assert marked(client, "年假", "policy.txt") == ["年", "假", "年", "年", "假"]
    assert marked(client, "policy", "policy.txt", search_type="hybrid") == ["policy"]


def test_a_vector_hit_is_marked_too_and_highlights_are_absent_unless_asked(client: TestClient) -> None:
    assert marked(client, "vacation days", "leave.txt", search_type="vector") == [
        "vacation",
        "days",
        "vacations",
    ]
    reply = client.post("/search", json={"query": "vacation", "search_type": "hybrid"})
    assert reply.status_code == 200, reply.text
    assert all(hit["highlights"] is None for hit in reply.json()["results"])
    assert "highlight" not in reply.json()["timings_ms"]


def test_a_query_with_no_word_marks_nothing(client: TestClient) -> None:
    reply = client.post("/search", json={"query": "%%% ???", "search_type": "vector", "highlight": True})
    assert reply.status_code == 200, reply.text
    assert reply.json()["results"]
    assert all(hit["highlights"] == [] for hit in reply.json()["results"])


@pytest.mark.parametrize("value", ["sometimes", "true", "yes", 1, 0])
def test_highlight_must_be_a_boolean(client: TestClient, value: object) -> None:
    # Strict, as every boolean of the API: "yes", "true" or 1 are not read as true.
    reply = client.post("/search", json={"query": "vacation", "highlight": value})
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"][0]["loc"] == ["body", "highlight"]


async def test_an_ascii_word_is_its_own_bm25_text(runtime: Runtime) -> None:
    """highlights.MATCHING_WORDS skips rag_bm25_text for ASCII words, which must then be returned as they
    are: a change to rag_bm25_text that splits or rewrites such a word must change the skip too."""
    text = (
        "FY-2024 Q3-2024 10.5% 3.14159 v2.3.1 x86_64 COVID-19 e-mail state-of-the-art jane.doe@example.com "
        "https://docs.example.com/guide/install-steps.html /var/log/app_server.log 1e10 -7 a1b2 snake_case "
        "it's O'Brien U.S.A. 12:30 #hash @mention"
    )
    words = sorted({word for _, _, word in word_spans(text)})
    assert {"2024", "10.5", "x86", "64", "install", "app", "server"} <= set(words)
    async with runtime.pool.acquire() as conn:
        changed = await conn.fetch(
            "SELECT w, rag_bm25_text(w) AS t FROM unnest($1::text[]) AS w WHERE rag_bm25_text(w) <> w", words
        )
    assert changed == []
