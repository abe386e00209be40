"""rag_server.client against the real app on a socket: the calls the CLI makes, typed results."""

from __future__ import annotations

from pathlib import Path

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
        assert result.duplicate and result.document_id == uploaded.tasks[0].document_id  # queued counts
        assert client.search("zebrafish", search_type="bm25").results == []
        with pytest.raises(ClientError, match="answered 404 to POST /search: no collection 'nope'") as err:
            client.search("zebrafish", collections=["nope"])
        assert err.value.status == 404


async def test_the_async_client_searches(live_app_url: str) -> None:
    async with AsyncClient(live_app_url) as client:
        response = await client.search("anything", search_type="bm25", top_k=3)
        assert response.results == [] and response.search_type == "bm25"
