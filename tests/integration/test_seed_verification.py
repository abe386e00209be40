"""The product's seed verification, replayed as written against `rag-server up` as a user runs it.

    POST /query {"query": "test query", "session_id": "test-session"}      -> 200
    POST /query {"query": ..., "session_id": "sess1"} twice (a follow-up)  -> 200, 200
    restart the server
    GET /chat/history/sess1                                                 -> the 4 messages, in order

One small text file is ingested first (through /upload and the stack's own worker) so answers cite it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from rag_server.client import Client
from tests.support.ingest import wait_for
from tests.support.up_stack import UpStack

TEXT = (
    "Axolotls are salamanders that regenerate whole limbs. After an amputation a blastema forms at the "
    "wound within days, and the new limb is complete after a few weeks.\n"
)


def post_query(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{base_url}/query", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_seed_steps_with_client_chosen_session_ids_survive_a_restart(tmp_path: Path) -> None:
    with UpStack() as stack:
        stack.start()
        document = tmp_path / "axolotl.txt"
        document.write_text(TEXT)
        with Client(stack.url) as client:
            batch = client.upload([document]).batch_id
            status = wait_for(lambda: (s := client.batch_status(str(batch))).done and s, 120, "ingestion")
            assert status.counts.get("completed") == 1, status

        first = post_query(stack.url, {"query": "test query", "session_id": "test-session"})
        assert first["external_id"] == "test-session"

        questions = ["How do axolotls regenerate limbs?", "How long does that take?"]
        answers = [post_query(stack.url, {"query": q, "session_id": "sess1"}) for q in questions]
        assert answers[0]["session_id"] == answers[1]["session_id"] != first["session_id"]
        assert all(a["sources"] and a["sources"][0]["document_name"] == "axolotl.txt" for a in answers)

        assert stack.stop() == 0
        stack.start()

        response = httpx.get(f"{stack.url}/chat/history/sess1", timeout=30)
        assert response.status_code == 200, response.text
        history = response.json()
        assert history["session_id"] == answers[0]["session_id"]
        messages = history["messages"]
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", questions[0]),
            ("assistant", answers[0]["answer"]),
            ("user", questions[1]),
            ("assistant", answers[1]["answer"]),
        ]
        for message, answer in zip(messages[1::2], answers, strict=True):
            assert [s["chunk_id"] for s in message["sources"]] == [s["chunk_id"] for s in answer["sources"]]
            assert message["sources"][0]["document_name"] == "axolotl.txt"
        other = httpx.get(f"{stack.url}/chat/history/test-session", timeout=30).json()
        assert other["messages"][0]["content"] == "test query"
