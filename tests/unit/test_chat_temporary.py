"""Temporary sessions: process memory only, titled by their first question, forgotten when idle."""

from __future__ import annotations

import uuid

import pytest

from rag_server.chat.temporary import TemporarySessions
from rag_server.errors import NotFoundError
from rag_server.infra.scoped_pool import DbScope, bind_scope, reset_scope


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
    registry = TemporarySessions(ttl_s=3600, per_key=100, max_messages=200)
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
    registry = TemporarySessions(ttl_s=3600, per_key=100, max_messages=200)
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
    registry = TemporarySessions(ttl_s=3600, per_key=100, max_messages=200)
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
    registry = TemporarySessions(ttl_s=3600, per_key=100, max_messages=200)
    session = await registry.create(title=None, search_type="bm25", llm_model=None)
    await registry.delete(session.id)  # e.g. DELETE /chat/sessions/{id} while the answer streamed
    with pytest.raises(NotFoundError):
        await registry.append_exchange(
            session.id, question="q", answer="a", answer_metadata={}, title_if_missing=None
        )
    assert not registry.holds(session.id)  # nothing was resurrected


async def test_each_key_keeps_at_most_its_own_cap_of_sessions() -> None:
    # A client creating temporary sessions in a loop grew the server's memory without bound: beyond the
    # cap, that key's least recently used goes, and never another key's.
    registry = TemporarySessions(ttl_s=3600, per_key=3, max_messages=200)
    looping, other = (DbScope(None, "editor", uuid.uuid4()) for _ in range(2))
    token = bind_scope(other)
    try:
        kept = await registry.create(title="other", search_type="hybrid", llm_model=None)
    finally:
        reset_scope(token)
    token = bind_scope(looping)
    try:
        made = [await registry.create(title=str(i), search_type="hybrid", llm_model=None) for i in range(5)]
        assert [s.title for s in made if registry.holds(s.id)] == ["2", "3", "4"]
        registry.entry(made[2].id)  # used again: no longer the least recently used
        made.append(await registry.create(title="5", search_type="hybrid", llm_model=None))
        assert [s.title for s in made if registry.holds(s.id)] == ["2", "4", "5"]
        # An answer's first turn creates its session: the same cap. (holds() is a use too: the check
        # above used 2, 4 and 5 in that order, so 2 is now the least recently used.)
        answered = uuid.uuid4()
        await registry.append_exchange(
            answered,
            question="q",
            answer="a",
            answer_metadata={},
            title_if_missing="q",
            create=made[0].model_copy(update={"id": answered}),
        )
        assert registry.holds(answered) and [s.title for s in made if registry.holds(s.id)] == ["4", "5"]
    finally:
        reset_scope(token)
    token = bind_scope(other)
    try:
        assert registry.holds(kept.id)
    finally:
        reset_scope(token)
