"""PATCH /documents/{id} with `expected_metadata`: the edit applies only over the metadata the caller last
read, checked under the document's row lock, so of two editors who read the same metadata one wins and
the other is told (409), never overwritten unseen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from rag_server.client import AsyncClient
from rag_server.client_errors import ClientError

TEXT = b"Metadata edited by two people at once."


async def uploaded(client: httpx.AsyncClient, name: str) -> str:
    response = await client.post("/upload", files=[("files", (name, TEXT + name.encode()))])
    assert response.status_code == 202, response.text
    document_id: str = response.json()["tasks"][0]["document_id"]
    return document_id


async def test_an_edit_over_the_metadata_read_applies(app_client: httpx.AsyncClient) -> None:
    doc = await uploaded(app_client, "a.txt")
    first = await app_client.patch(
        f"/documents/{doc}", json={"metadata": {"team": "a"}, "expected_metadata": {}}
    )
    assert first.status_code == 200, first.text
    # Key order and the mode do not matter: the stored object is compared.
    merged = await app_client.patch(
        f"/documents/{doc}",
        json={"metadata": {"year": 2026}, "mode": "merge", "expected_metadata": {"team": "a"}},
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["metadata"] == {"team": "a", "year": 2026}


async def test_an_edit_over_metadata_changed_since_is_a_409_and_writes_nothing(
    app_client: httpx.AsyncClient,
) -> None:
    doc = await uploaded(app_client, "b.txt")
    assert (await app_client.patch(f"/documents/{doc}", json={"metadata": {"team": "a"}})).status_code == 200
    stale = await app_client.patch(
        f"/documents/{doc}", json={"metadata": {"team": "b"}, "expected_metadata": {}}
    )
    assert stale.status_code == 409, stale.text
    assert "was changed since it was read" in stale.json()["detail"]
    assert (await app_client.get(f"/documents/{doc}")).json()["metadata"] == {"team": "a"}
    # Without it, the later edit wins, as before.
    forced = await app_client.patch(f"/documents/{doc}", json={"metadata": {"team": "b"}})
    assert forced.json()["metadata"] == {"team": "b"}


async def test_of_two_editors_who_read_the_same_metadata_one_wins(app_client: httpx.AsyncClient) -> None:
    doc = await uploaded(app_client, "c.txt")
    for round_ in range(5):
        read = (await app_client.get(f"/documents/{doc}")).json()["metadata"]
        answers = await asyncio.gather(
            *(
                app_client.patch(
                    f"/documents/{doc}",
                    json={"metadata": {"editor": who, "round": round_}, "expected_metadata": read},
                )
                for who in ("ann", "bob")
            )
        )
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        [winner] = [a.json()["metadata"] for a in answers if a.status_code == 200]
        assert (await app_client.get(f"/documents/{doc}")).json()["metadata"] == winner


async def test_the_client_sends_what_it_read(live_app_url: str, tmp_path: Path) -> None:
    path = tmp_path / "client.txt"
    path.write_bytes(TEXT + b" (the client's)")
    async with AsyncClient(live_app_url) as rag:
        doc = str((await rag.upload([path], metadata={"team": "a"})).tasks[0].document_id)
        read = (await rag.document(doc)).metadata
        assert (await rag.update_metadata(doc, {"team": "b"}, expected=read)).metadata == {"team": "b"}
        with pytest.raises(ClientError) as refused:
            await rag.update_metadata(doc, {"team": "c"}, expected=read)
        assert refused.value.status == 409 and "changed since it was read" in str(refused.value)


@pytest.mark.parametrize(
    ("stored", "read"),
    [({"reviewed": True}, {"reviewed": 1}), ({"n": 0}, {"n": False}), ({"tags": [1]}, {"tags": [True]})],
    ids=["true-read-as-1", "0-read-as-false", "nested"],
)
async def test_metadata_of_another_json_type_is_not_the_metadata_read(
    app_client: httpx.AsyncClient, stored: dict[str, object], read: dict[str, object]
) -> None:
    # JSON's true is not 1 (nor false 0): an editor who read `1` where `true` was saved meanwhile overwrote
    # it unseen (Python's True == 1 passed the check).
    doc = await uploaded(app_client, f"typed-{next(iter(stored))}.txt")
    assert (await app_client.patch(f"/documents/{doc}", json={"metadata": stored})).status_code == 200
    stale = await app_client.patch(f"/documents/{doc}", json={"metadata": {}, "expected_metadata": read})
    assert stale.status_code == 409, stale.text
    assert (await app_client.get(f"/documents/{doc}")).json()["metadata"] == stored
