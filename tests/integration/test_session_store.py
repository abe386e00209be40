"""The two SessionStore implementations (PostgreSQL, in-memory temporary) honour one contract."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from rag_server.chat.session_store import PostgresSessionStore, SessionStore
from rag_server.chat.temporary import TemporarySessions
from rag_server.errors import NotFoundError
from rag_server.infra.runtime import Runtime


@pytest.fixture(params=["postgres", "temporary"])
async def store(request: pytest.FixtureRequest, runtime: Runtime) -> AsyncIterator[SessionStore]:
    if request.param == "postgres":
        postgres = PostgresSessionStore(runtime.pool)
        yield postgres
        await postgres.drain()
    else:
        yield TemporarySessions(ttl_s=3600, per_key=100, max_messages=200)


def source(n: int, document_id: uuid.UUID) -> dict[str, object]:
    return {
        "n": n,
        "chunk_id": n,
        "document_id": str(document_id),
        "document_name": f"doc{n}.txt",
        "page": None,
        "excerpt": "text",
        "score": 0.5,
    }


async def test_create_get_update(store: SessionStore) -> None:
    session = await store.create(title=None, search_type="bm25", llm_model="m")
    assert (session.title, session.search_type, session.llm_model, session.message_count) == (
        None,
        "bm25",
        "m",
        0,
    )
    assert session.is_temporary == isinstance(store, TemporarySessions)
    assert (await store.get(session.id)).id == session.id

    renamed = await store.update(session.id, title="renamed", is_archived=None, search_type=None)
    assert (renamed.title, renamed.is_archived, renamed.search_type) == ("renamed", False, "bm25")
    archived = await store.update(session.id, title=None, is_archived=True, search_type="vector")
    assert (archived.title, archived.is_archived, archived.search_type) == ("renamed", True, "vector")
    assert archived.updated_at >= session.updated_at
    assert archived.last_active_at == session.last_active_at  # an edit is no activity
    assert (await store.get(session.id)).title == "renamed"


async def test_history_is_in_order_recent_is_its_tail_and_clear_keeps_the_session(
    store: SessionStore,
) -> None:
    session = await store.create(title=None, search_type="hybrid", llm_model=None)
    document_id = uuid.uuid4()  # never stored: a deleted document, as far as history can tell
    for i in range(3):
        await store.append_exchange(
            session.id,
            question=f"q{i}",
            answer=f"a{i} [1]",
            answer_metadata={"sources": [source(1, document_id)], "answer_mode": "extractive"},
            title_if_missing=f"title {i}",
        )
    history = await store.history(session.id)
    assert [(m.role, m.content) for m in history] == [
        (role, f"{letter}{i}" + (" [1]" if role == "assistant" else ""))
        for i in range(3)
        for role, letter in (("user", "q"), ("assistant", "a"))
    ]
    assert history[1].sources[0].document_name == "doc1.txt"
    assert history[1].metadata["answer_mode"] == "extractive"
    now = await store.get(session.id)
    assert now.title == "title 0" and now.message_count == 6  # the first exchange named it

    current, tail = await store.recent(session.id, last=3)
    assert current.id == session.id
    assert [m.content for m in tail] == ["a1 [1]", "q2", "a2 [1]"]
    assert (await store.recent(session.id, last=0))[1] == []

    assert await store.clear(session.id) == 6
    assert await store.history(session.id) == []
    cleared = await store.get(session.id)
    assert cleared.message_count == 0 and cleared.title == "title 0"


async def test_append_can_create_the_session_and_delete_forgets_it(store: SessionStore) -> None:
    session = await store.create(title="t", search_type="hybrid", llm_model=None)
    new = session.model_copy(update={"id": uuid.uuid4(), "title": None})
    await store.append_exchange(
        new.id, question="q", answer="a", answer_metadata={"sources": []}, title_if_missing="q", create=new
    )
    assert [m.content for m in await store.history(new.id)] == ["q", "a"]
    assert (await store.get(new.id)).title == "q"

    await store.delete(session.id)
    with pytest.raises(NotFoundError):
        await store.get(session.id)


async def test_unknown_ids_raise_not_found(store: SessionStore) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFoundError, match=str(missing)):
        await store.get(missing)
    with pytest.raises(NotFoundError):
        await store.update(missing, title="x", is_archived=None, search_type=None)
    with pytest.raises(NotFoundError):
        await store.delete(missing)
    with pytest.raises(NotFoundError):
        await store.history(missing)
    with pytest.raises(NotFoundError):
        await store.recent(missing, last=6)
    with pytest.raises(NotFoundError):
        await store.clear(missing)
    with pytest.raises(NotFoundError):
        await store.append_exchange(
            missing, question="q", answer="a", answer_metadata={"sources": []}, title_if_missing=None
        )
