"""Without an LLM, a follow-up searched again with the question before it is also answered from that
question's words: the extractive answer quotes the sentences about the topic of the two, not the opening
of the passage (which the follow-up's own words, "Is that the same for part-timers?", do not pick).
The real application in this process, the real local model, no LLM."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct

HANDBOOK = """# HR handbook

Employees get 25 vacation days per year. Unused vacation days carry over until March 31 of the next year.
Sick leave is unlimited with a doctor's note after three days.
"""
IT_GUIDE = """# IT guide

Install the VPN client before your first day. Report outages to the service desk.
"""


async def test_a_follow_up_searched_again_is_answered_about_the_earlier_topic(
    runtime: Runtime, settings: Settings, sync_app_client: TestClient
) -> None:
    await ingest_documents_direct(
        runtime,
        [DirectDocument("hr.md", HANDBOOK.encode(), {}), DirectDocument("it.md", IT_GUIDE.encode(), {})],
    )

    def ask(query: str) -> dict[str, Any]:
        reply = sync_app_client.post("/query", json={"query": query, "session_id": "follow-up-answer"})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    first = ask("How does sick leave work?")
    assert "Sick leave is unlimited" in first["answer"], first["answer"]
    follow = ask("Is that the same for part-timers?")
    assert follow["condensed_query"] == "How does sick leave work? Is that the same for part-timers?"
    assert [s["document_name"] for s in follow["sources"]][:1] == ["hr.md"]
    # It quoted "Employees get 25 vacation days per year.": the passage's opening, as no word of the
    # follow-up alone is in it.
    assert "Sick leave is unlimited" in follow["answer"], follow["answer"]
    assert "vacation" not in follow["answer"], follow["answer"]
