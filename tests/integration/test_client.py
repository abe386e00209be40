"""rag_server.client against the real app on a socket: the calls the CLI makes, typed results."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from rag_server.client import AsyncClient, Client, ClientError
from rag_server.ingestion.documents import sha256_hex


def test_the_client_uploads_checks_polls_and_searches(live_app_url: str, tmp_path: Path) -> None:
    paper = tmp_path / "zebrafish.txt"
    paper.write_bytes(b"Zebrafish regenerate heart muscle after injury.")
    with Client(live_app_url) as client:
        assert client.health()["auth"] == "open"
        uploaded = client.upload([paper])
        assert [t.filename for t in uploaded.tasks] == ["zebrafish.txt"]
        status = client.batch_status(str(uploaded.batch_id))
        assert status.batch_id == uploaded.batch_id and status.total == 1
        (result,) = client.check_duplicates([(paper.name, sha256_hex(paper.read_bytes()))]).results
        # Found, not yet called stored: only a ready document is (a copy of a queued one is sent).
        assert (result.duplicate, result.status, result.document_id) == (
            False,
            "queued",
            uploaded.tasks[0].document_id,
        )
        assert client.search("zebrafish", search_type="bm25").results == []
        with pytest.raises(ClientError, match="answered 404 to POST /search: no collection 'nope'") as err:
            client.search("zebrafish", collections=["nope"])
        assert err.value.status == 404
        # The API's stable code, for a caller to branch on rather than the sentence.
        assert err.value.code == "collection_not_found"


def test_the_client_lists_and_deletes_documents(live_app_url: str, tmp_path: Path) -> None:
    paths = []
    for name in ("keep.txt", "drop-1.txt", "drop-2.txt", "drop-3.txt"):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(f"{name} holds words of its own.".encode())
    with Client(live_app_url) as client:
        uploaded = client.upload(
            paths, metadata={"suite": "client"}, file_metadata={"keep.txt": {"keep": True}}
        )
        ids = {t.filename: str(t.document_id) for t in uploaded.tasks}

        def listed(**params: object) -> list[str]:
            return [d.filename for d in client.documents(metadata={"suite": "client"}, **params).items]

        assert listed(sort="name", order="asc") == sorted(ids)
        assert listed(name="DROP-", sort="name", order="asc", limit=2) == ["drop-1.txt", "drop-2.txt"]
        assert client.documents(metadata={"keep": True}).total == 1
        edited = client.update_documents(metadata={ids["drop-1.txt"]: {"suite": "client", "keep": False}})
        assert [str(i) for i in edited.updated] == [ids["drop-1.txt"]]
        assert client.document(ids["drop-1.txt"]).metadata == {"suite": "client", "keep": False}
        # Every document a selection names at once (as a delete's: the ids among those the metadata names).
        matching = client.update_matching(
            values={"round": 2}, metadata={"suite": "client"}, ids=[ids["drop-1.txt"], ids["drop-3.txt"]]
        )
        assert sorted(str(i) for i in matching.updated) == sorted([ids["drop-1.txt"], ids["drop-3.txt"]])
        assert client.document(ids["drop-1.txt"]).metadata == {"suite": "client", "keep": False, "round": 2}
        assert client.documents(metadata={"round": 2}).total == 2
        client.delete_document(ids["drop-1.txt"])
        with pytest.raises(ClientError, match="answered 404") as err:
            client.delete_document(ids["drop-1.txt"])
        both = client.delete_documents(ids=[ids["drop-2.txt"], ids["drop-1.txt"]])
        assert [str(i) for i in both.deleted] == [ids["drop-2.txt"]]
        assert [str(i) for i in both.not_deleted] == [ids["drop-1.txt"]]
        matched = client.delete_documents(metadata={"suite": "client"}, ids=[ids["drop-3.txt"]])
        assert [str(i) for i in matched.deleted] == [ids["drop-3.txt"]]
        assert listed() == ["keep.txt"]
        with pytest.raises(ClientError, match="name the documents to delete") as err:
            client.delete_documents()
        assert err.value.status == 422
        # Chroma's where_document reaches the server, as JSON in the query and in the body (no worker
        # here: what it selects is tested where chunks are written).
        with pytest.raises(ClientError, match=r"to GET /documents: text: '\$regex' is no operator"):
            client.documents(text={"$regex": "x"})
        with pytest.raises(ClientError, match="to POST /documents/delete: text: a JSON object with an"):
            client.delete_documents(text={})
        keep = ids["keep.txt"]
        unread = client.chunks(keep, text={"$contains": "holds"}, offset=3, limit=5)
        assert (unread.total, unread.offset, unread.limit, unread.items) == (0, 3, 5, [])
        with pytest.raises(ClientError, match=rf"to GET /documents/{keep}/chunks: text: '\$regex' is no"):
            client.chunks(keep, text={"$regex": "x"})


async def test_the_async_client_searches(live_app_url: str) -> None:
    async with AsyncClient(live_app_url) as client:
        response = await client.search("anything", search_type="bm25", top_k=3)
        assert response.results == [] and response.search_type == "bm25"
        with pytest.raises(ClientError, match="answered 404 to GET /documents/"):
            await client.chunks("00000000-0000-0000-0000-000000000000", text={"$contains": "x"})


def test_a_request_the_server_refuses_is_one_sentence_naming_each_field(live_app_url: str) -> None:
    # A 422's detail is a list of problems; its Python repr ("[{'type': 'greater_than_equal', 'loc':
    # ['body', 'top_k'], ...}]") was the message.
    with Client(live_app_url) as client:
        with pytest.raises(ClientError) as err:
            client.search("zebrafish", top_k=0, search_type="fuzzy")
        assert err.value.status == 422
        assert str(err.value) == (
            "the server answered 422 to POST /search: top_k: Input should be greater than or equal to 1; "
            "search_type: Input should be 'vector', 'bm25' or 'hybrid'"
        )
        with pytest.raises(
            ClientError, match=r"to GET /documents/abc: document_id: Input should be a valid UUID"
        ):
            client.document("abc")


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"filters": {"file_type": ["md"]}}, "filters.file_type: Extra inputs are not permitted"),
        ({"filter": {"file_types": ["md"]}}, "filter: Extra inputs are not permitted"),
        ({"topk": 1}, "topk: Extra inputs are not permitted"),
    ],
)
def test_a_misspelt_search_option_is_refused_not_ignored(
    live_app_url: str, params: dict[str, object], said: str
) -> None:
    # Ignored, the search ran without it: every hit, unfiltered.
    with Client(live_app_url) as client, pytest.raises(ClientError) as err:
        client.search("zebrafish", **params)
    assert err.value.status == 422 and str(err.value).endswith(f"to POST /search: {said}"), err.value


def test_a_misspelt_query_option_is_refused_not_ignored(live_app_url: str) -> None:
    # `collection` for `collections`: the answer came from `default`.
    with Client(live_app_url) as client, pytest.raises(ClientError) as err:
        client.query("zebrafish?", collection="papers")
    assert err.value.status == 422
    assert str(err.value).endswith("to POST /query: collection: Extra inputs are not permitted"), err.value


async def test_both_clients_search_chat_sessions(live_app_url: str) -> None:
    with Client(live_app_url) as client:
        made = client._http.post("/chat/sessions", json={"title": "Quarterly fjord survey"}).json()
        client._http.post("/chat/sessions", json={"title": "Another chat"})
        found = client.chat_sessions("FJORD quart", limit=5)
        assert [s.id for s in found.sessions] == [UUID(made["id"])] and found.total == 1
        assert client.chat_sessions(limit=1).total >= 2
    async with AsyncClient(live_app_url) as aclient:
        found = await aclient.chat_sessions("fjord")
        assert [s.title for s in found.sessions] == ["Quarterly fjord survey"]
