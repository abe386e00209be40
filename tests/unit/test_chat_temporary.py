"""Temporary sessions: process memory only, titled by their first question, forgotten when idle."""

from __future__ import annotations

import uuid

import pytest

from rag_server.chat.temporary import TemporarySessions
from rag_server.errors import NotFoundError


def source(n: int) -> dict[str, object]:
    return {
        "n": n,
        "chunk_id": n,
        "document_id": str(uuid.uuid4()),
        "document_name": f"doc{n}.txt",
        "page": None,
        "excerpt": "text",
        "score": 0.5,
    }


async def test_append_keeps_order_sources_and_first_title() -> None:
    registry = TemporarySessions(ttl_s=3600)
    session = await registry.create(title=None, search_type="bm25", llm_model=None)
    entry = registry.entry(session.id)
    assert entry is not None and entry.session.is_temporary
    await registry.append_exchange(
        session.id,
        question="q1",
        answer="a1 [1]",
        answer_metadata={"sources": [source(1)]},
        title_if_missing="q1",
    )
    await registry.append_exchange(
        session.id, question="q2", answer="a2", answer_metadata={"sources": []}, title_if_missing="q2"
    )
    assert [(m.role, m.content) for m in entry.messages] == [
        ("user", "q1"),
        ("assistant", "a1 [1]"),
        ("user", "q2"),
        ("assistant", "a2"),
    ]
    assert all(m.id is None for m in entry.messages)
    assert entry.messages[1].sources[0].document_name == "doc1.txt"
    assert entry.session.title == "q1" and entry.session.message_count == 4


async def test_idle_sessions_expire_and_delete_forgets() -> None:
    registry = TemporarySessions(ttl_s=3600)
    kept = await registry.create(title="t", search_type="hybrid", llm_model=None)
    gone = await registry.create(title="t", search_type="hybrid", llm_model=None)
    entry = registry.entry(gone.id)
    assert entry is not None
    entry.last_used -= 7200  # idle for two hours
    assert registry.entry(gone.id) is None
    assert registry.entry(kept.id) is not None
    await registry.delete(kept.id)
    assert registry.entry(kept.id) is None
    with pytest.raises(NotFoundError):
        await registry.delete(uuid.uuid4())


async def test_clear_forgets_messages_and_resets_the_count() -> None:
    registry = TemporarySessions(ttl_s=3600)
    session = await registry.create(title=None, search_type="hybrid", llm_model=None)
    await registry.append_exchange(
        session.id, question="q", answer="a", answer_metadata={"sources": []}, title_if_missing="q"
    )
    assert await registry.clear(session.id) == 2
    entry = registry.entry(session.id)
    assert entry is not None
    assert entry.messages == []
    assert entry.session.message_count == 0 and entry.session.title == "q"


async def test_an_answer_for_a_session_deleted_meanwhile_is_refused_like_a_stored_one() -> None:
    registry = TemporarySessions(ttl_s=3600)
    session = await registry.create(title=None, search_type="bm25", llm_model=None)
    await registry.delete(session.id)  # e.g. DELETE /chat/sessions/{id} while the answer streamed
    with pytest.raises(NotFoundError):
        await registry.append_exchange(
            session.id, question="q", answer="a", answer_metadata={}, title_if_missing=None
        )
    assert not registry.holds(session.id)  # nothing was resurrected
