"""POST /search against the real application in this process, and `rag-server search` as a subprocess,
over really ingested chunks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from starlette.testclient import TestClient

from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from tests.support.processes import process_env

DOCS = {
    "zebrafish.md": "# Regeneration\n\nZebrafish regenerate cardiac muscle after injury; cardiomyocytes "
    "proliferate and restore the ventricle.",
    "insulin.txt": "Insulin resistance in type 2 diabetes raises blood glucose; metformin lowers hepatic "
    "glucose output.",
    "vitamin.txt": "Vitamin D supplementation and bone density in older adults: a randomised trial of "
    "fracture risk.",
    "mice.txt": "Knockout mice lacking the gene showed reduced tumour growth and longer survival.",
}


@pytest.fixture(scope="module")
async def doc_ids(runtime: Runtime) -> dict[str, UUID]:
    extra = {
        "zebrafish.md": {"year": 2018, "journal": "Nature", "impact": 49.9},
        "insulin.txt": {"year": 2019, "journal": "Lancet", "reviewer": "ann"},
        "vitamin.txt": {"year": 2021, "journal": "BMJ", "tags": ["trial"]},
        "mice.txt": {"tags": ["oncology", "genetics"], "year": 2020, "reviewer": None},
    }
    docs = [
        DirectDocument(name, text.encode(), {"source": "test", **extra.get(name, {})})
        for name, text in DOCS.items()
    ]
    ids = await ingest_documents_direct(runtime, docs)
    return dict(zip(DOCS, ids, strict=True))


@pytest.fixture(scope="module")
def client(sync_app_client: TestClient, doc_ids: dict[str, UUID]) -> TestClient:
    return sync_app_client


def post(client: httpx.Client, body: object) -> httpx.Response:
    # json.dumps escapes NUL and lone surrogates (\\u0000, \\ud800) as a hostile client would send them.
    return client.post("/search", content=json.dumps(body), headers={"content-type": "application/json"})


def test_health_reports_the_bm25_engine(client: TestClient) -> None:
    assert client.get("/health").json()["bm25_engine"] == "native"


@pytest.mark.parametrize("search_type", ["vector", "bm25", "hybrid"])
def test_each_search_type_finds_the_document(
    client: TestClient, doc_ids: dict[str, UUID], search_type: str
) -> None:
    reply = post(client, {"query": "zebrafish heart regeneration", "top_k": 3, "search_type": search_type})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["search_type"] == search_type
    top = body["results"][0]
    assert top["document_name"] == "zebrafish.md"
    assert top["document_id"] == str(doc_ids["zebrafish.md"])
    assert top["chunk_index"] == 0
    assert "cardiomyocytes" in top["text"]
    assert top["metadata"]["source"] == "test"
    assert 1 <= len(body["results"]) <= 3
    legs = {"vector": ["vector"], "bm25": ["bm25"], "hybrid": ["vector", "bm25"]}[search_type]
    for leg in legs:
        assert top[leg]["rank"] == 1
    expected_timings = {"vector": {"embed", "vector"}, "bm25": {"bm25"}}.get(
        search_type, {"embed", "vector", "bm25", "fuse"}
    )
    assert expected_timings | {"fetch", "total"} <= set(body["timings_ms"])
    if search_type != "hybrid":
        assert top["score"] == top[search_type]["score"]


def test_hybrid_fusion_can_be_chosen_per_request(client: TestClient) -> None:
    for fusion in ("rrf", "convex"):
        reply = post(client, {"query": "metformin diabetes", "search_type": "hybrid", "fusion": fusion})
        assert reply.status_code == 200
        top = reply.json()["results"][0]
        assert top["document_name"] == "insulin.txt"
        if fusion == "rrf":
            assert top["score"] == pytest.approx(2 / 61)  # rank 1 in both legs, k=60
        else:
            assert top["score"] == pytest.approx(1.0)  # best of both legs after min-max


def test_filters_through_the_api(client: TestClient, doc_ids: dict[str, UUID]) -> None:
    body = {
        "query": "zebrafish heart",
        "top_k": 10,
        "filters": {"document_ids": [str(doc_ids["mice.txt"])]},
    }
    for search_type in ("vector", "bm25", "hybrid"):
        reply = post(client, {**body, "search_type": search_type})
        assert reply.status_code == 200
        names = {r["document_name"] for r in reply.json()["results"]}
        assert names <= {"mice.txt"}, search_type


HOSTILE = [
    "'; DROP TABLE chunks; --",
    'title:"zebrafish" AND (heart OR -muscle) +x ~2 ^3 \\ | & ! <-> :* @@@',
    "🧬🐭🚀 zebrafish ❤️",
    "the of and a is",
    "\u0000zebrafish\u0000",
    "zebrafish " * 1000,  # 10,000 characters
]


@pytest.mark.parametrize("query", HOSTILE)
@pytest.mark.parametrize("search_type", ["vector", "bm25", "hybrid"])
def test_hostile_queries_are_answered(client: TestClient, query: str, search_type: str) -> None:
    reply = post(client, {"query": query, "search_type": search_type})
    assert reply.status_code == 200, reply.text
    assert isinstance(reply.json()["results"], list)


def test_lone_surrogate_is_a_4xx(client: TestClient) -> None:
    # FastAPI's 422 echoes the invalid input; it must still encode (api/errors.AsciiJSONResponse).
    reply = post(client, {"query": "zebrafish \ud800", "search_type": "bm25"})
    assert reply.status_code == 422
    assert reply.json()["detail"]


def test_stopword_query_has_no_bm25_results_and_tables_survive(client: TestClient) -> None:
    assert post(client, {"query": "the of and a is", "search_type": "bm25"}).json()["results"] == []
    reply = post(client, {"query": "zebrafish", "search_type": "bm25"})
    assert reply.json()["results"][0]["document_name"] == "zebrafish.md"


@pytest.mark.parametrize("search_type", ["vector", "bm25", "hybrid"])
def test_a_metadata_filter_matches_equal_values_and_inside_lists(
    client: TestClient, doc_ids: dict[str, UUID], search_type: str
) -> None:
    def found(metadata: dict[str, object]) -> bool:
        body = {
            "query": "knockout mice tumour",
            "search_type": search_type,
            "filters": {"metadata": metadata},
        }
        reply = post(client, body)
        assert reply.status_code == 200, reply.text
        return str(doc_ids["mice.txt"]) in {r["document_id"] for r in reply.json()["results"]}

    for matching in (
        {"tags": "oncology"},
        {"tags": ["genetics", "oncology"]},
        {"tags": "genetics", "year": 2020, "source": "test"},
    ):
        assert found(matching), matching
    for other in (
        {"tags": "cardiology"},
        {"tags": ["oncology", "cardiology"]},
        {"year": "2020"},
        {"tag": "oncology"},
    ):
        assert not found(other), other


OPERATORS = [
    ({"year": {"$gte": 2020}}, {"mice.txt", "vitamin.txt"}),
    ({"year": {"$gt": 2018, "$lte": 2020}}, {"insulin.txt", "mice.txt"}),
    ({"year": {"$lt": 2019.5}}, {"zebrafish.md", "insulin.txt"}),
    ({"year": {"$eq": 2020}}, {"mice.txt"}),
    ({"year": {"$in": [2018, 2021, 1999]}}, {"zebrafish.md", "vitamin.txt"}),
    ({"year": {"$nin": [2018, 2021]}}, {"insulin.txt", "mice.txt"}),
    # A key the metadata lacks matches no condition: mice.txt has no journal.
    ({"journal": {"$ne": "Nature"}}, {"insulin.txt", "vitamin.txt"}),
    ({"journal": {"$nin": ["Nature"]}}, {"insulin.txt", "vitamin.txt"}),
    # Nor does a key holding null (an upload or a replace keeps it; a merge's null removes the key, as
    # Chroma's update does): mice.txt's reviewer is null. It matched both, and a delete by $ne took it.
    ({"reviewer": {"$ne": "bob"}}, {"insulin.txt"}),
    ({"reviewer": {"$nin": ["bob"]}}, {"insulin.txt"}),
    # Lists: $in finds a list holding one of the values, $ne one not holding it.
    ({"tags": {"$in": ["trial", "genetics"]}}, {"vitamin.txt", "mice.txt"}),
    ({"tags": {"$ne": "trial"}}, {"mice.txt"}),
    ({"$or": [{"journal": "Nature"}, {"tags": "oncology"}]}, {"zebrafish.md", "mice.txt"}),
    (
        {"$and": [{"year": {"$gte": 2019}}, {"$or": [{"journal": "BMJ"}, {"journal": "Lancet"}]}]},
        {"insulin.txt", "vitamin.txt"},
    ),
    # Comparisons are on numbers only: a text never compares (and never raises).
    ({"journal": {"$gt": 0}}, set()),
    ({"impact": {"$gt": 49.89}}, {"zebrafish.md"}),
    # A float compares as written (49.9), not as its binary expansion (49.899999999999998578...).
    ({"impact": {"$gte": 49.9}}, {"zebrafish.md"}),
    ({"impact": {"$lte": 49.9}}, {"zebrafish.md"}),
    ({"impact": {"$gt": 49.9}}, set()),
    ({"impact": {"$lt": 49.9}}, set()),
]


@pytest.mark.parametrize("search_type", ["vector", "bm25", "hybrid"])
def test_chromas_where_operators_select_the_same_documents_in_every_leg(
    client: TestClient, doc_ids: dict[str, UUID], search_type: str
) -> None:
    for metadata, expected in OPERATORS:
        body = {
            "query": "zebrafish insulin vitamin knockout mice",
            "search_type": search_type,
            "filters": {"metadata": metadata},
        }
        reply = post(client, body)
        assert reply.status_code == 200, reply.text
        assert {r["document_name"] for r in reply.json()["results"]} == expected, metadata


def test_the_document_listing_takes_the_same_operators(client: TestClient, doc_ids: dict[str, UUID]) -> None:
    for metadata, expected in OPERATORS:
        reply = client.get("/documents", params={"metadata": json.dumps(metadata), "limit": 100})
        assert reply.status_code == 200, reply.text
        names = {d["filename"] for d in reply.json()["items"]} & set(DOCS)
        assert names == expected, metadata


def test_an_operator_refused_is_a_422_naming_where(client: TestClient) -> None:
    body = {"query": "x", "filters": {"metadata": {"$or": [{"year": {"$gt": "2020"}}]}}}
    reply = post(client, body)
    assert reply.status_code == 422, reply.text
    assert "$or[0].year.$gt: a number, not a text" in reply.text
    listing = client.get("/documents", params={"metadata": '{"year": {"$regex": "^20"}}'})
    assert listing.status_code == 422, listing.text
    assert "'$regex' is no operator" in listing.text


# Chroma's where_document on each chunk's text: exact (case as written), `%` and `_` literal.
TEXT_MATCHES = [
    ({"$contains": "glucose"}, {"insulin.txt"}),
    ({"$contains": "Vitamin"}, {"vitamin.txt"}),
    ({"$contains": "vitamin"}, set()),
    ({"$contains": "%"}, set()),
    ({"$not_contains": "mice"}, {"zebrafish.md", "insulin.txt", "vitamin.txt"}),
    ({"$or": [{"$contains": "glucose"}, {"$contains": "tumour"}]}, {"insulin.txt", "mice.txt"}),
    (
        {"$and": [{"$contains": "in"}, {"$not_contains": "glucose"}]},
        {"zebrafish.md", "vitamin.txt", "mice.txt"},
    ),
    ({"$contains": "in", "$not_contains": "glucose"}, {"zebrafish.md", "vitamin.txt", "mice.txt"}),
]


@pytest.mark.parametrize("search_type", ["vector", "bm25", "hybrid"])
def test_chromas_where_document_keeps_the_chunks_whose_text_matches_in_every_leg(
    client: TestClient, doc_ids: dict[str, UUID], search_type: str
) -> None:
    query = "zebrafish insulin vitamin knockout mice"
    for text, expected in TEXT_MATCHES:
        reply = post(client, {"query": query, "search_type": search_type, "filters": {"text": text}})
        assert reply.status_code == 200, reply.text
        assert {r["document_name"] for r in reply.json()["results"]} == expected, text
    # With a metadata match: both must hold.
    both = {"text": {"$contains": "in"}, "metadata": {"year": {"$gte": 2020}}}
    reply = post(client, {"query": query, "search_type": search_type, "filters": both})
    assert {r["document_name"] for r in reply.json()["results"]} == {"vitamin.txt", "mice.txt"}


def test_the_document_listing_takes_the_same_text_matches(
    client: TestClient, doc_ids: dict[str, UUID]
) -> None:
    for text, expected in TEXT_MATCHES:
        reply = client.get("/documents", params={"text": json.dumps(text), "limit": 100})
        assert reply.status_code == 200, reply.text
        assert {d["filename"] for d in reply.json()["items"]} & set(DOCS) == expected, text
        assert reply.json()["total"] == len(reply.json()["items"])


def test_a_text_match_refused_is_a_422_naming_where(client: TestClient) -> None:
    body = {"query": "x", "filters": {"text": {"$or": [{"$contains": ""}]}}}
    reply = post(client, body)
    assert reply.status_code == 422, reply.text
    assert "$or[0].$contains: String should have at least 1 character" in reply.text
    listing = client.get("/documents", params={"text": '{"$regex": "^20"}'})
    assert listing.status_code == 422, listing.text
    assert "'$regex' is no operator" in listing.text
    assert listing.json()["detail"][0]["loc"][:2] == ["query", "text"]
    for bad in ('"glucose"', "{", '{"$contains": 1}', '{"$not_contains": ["a"]}', "{}"):
        reply = client.get("/documents", params={"text": bad})
        assert reply.status_code == 422, (bad, reply.text)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"query": ""},
        {"query": "   "},  # white space alone searched for whatever is nearest to nothing
        {"query": "\u0000 \t"},
        {"query": "x", "top_k": 0},
        {"query": "x", "top_k": 101},
        {"query": "x", "top_k": "many"},
        # JSON's true/false is no number: pydantic's lax mode read true as 1 (one hit, ef_search 1) and
        # false as a floor of 0, without a word.
        {"query": "x", "top_k": True},
        {"query": "x", "ef_search": True},
        {"query": "x", "min_similarity": False},
        {"query": "x", "search_type": "fuzzy"},
        {"query": "x", "fusion": "max"},
        {"query": "x", "ef_search": 0},
        {"query": "x", "filters": {"document_ids": ["not-a-uuid"]}},
        {"query": "x", "filters": {"metadata": {"k": {"nested": 1}}}},
        {"query": "x", "filters": {"metadata": {"k": [["nested"]]}}},
        {"query": "x", "filters": {"metadata": {"k": list(range(51))}}},
        {"query": "x", "filters": {"metadata": {"k": []}}},  # would match any list
        {"query": "x" * 20_001},
        ["query"],
    ],
)
def test_bad_parameters_are_422_json(client: TestClient, body: object) -> None:
    reply = post(client, body)
    assert reply.status_code == 422, reply.text
    assert "detail" in reply.json()


def test_cli_search_prints_a_table(
    live_app_url: str, doc_ids: dict[str, UUID], database_url: str, data_dir: Path
) -> None:
    env = process_env(database_url, data_dir)
    for extra in (["--type", "bm25"], ["--url", live_app_url, "--top-k", "2"]):
        done = subprocess.run(
            [sys.executable, "-m", "rag_server", "search", "zebrafish regeneration", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert "zebrafish.md" in lines[1]
        assert "results; ms:" in lines[-1]
