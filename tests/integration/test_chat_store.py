"""The LlamaIndex chat store and the session SQL on a real embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import ChatMessage, MessageRole, MockLLM
from llama_index.core.memory import ChatMemoryBuffer

from rag_server.chat import session_listing, sessions
from rag_server.errors import NotFoundError
from rag_server.infra.runtime import Runtime
from rag_server.integrations.llamaindex_chat_store import PostgresChatStore


def msg(role: MessageRole, content: str, **extra: object) -> ChatMessage:
    return ChatMessage(role=role, content=content, additional_kwargs=dict(extra))


async def test_async_methods_round_trip(runtime: Runtime) -> None:
    store = PostgresChatStore(runtime.pool)
    key = str(uuid.uuid4())
    await store.async_add_message(key, msg(MessageRole.USER, "hello", lang="en"))
    await store.async_add_message(key, msg(MessageRole.ASSISTANT, "hi there"))
    messages = await store.aget_messages(key)
    assert [(m.role, m.content) for m in messages] == [
        (MessageRole.USER, "hello"),
        (MessageRole.ASSISTANT, "hi there"),
    ]
    assert messages[0].additional_kwargs == {"lang": "en"}
    assert key in await store.aget_keys()
    # The key is a real chat session: the REST history sees the same rows.
    history = await sessions.list_messages(runtime.pool, uuid.UUID(key))
    assert [m.content for m in history] == ["hello", "hi there"]

    await store.aset_messages(key, [msg(MessageRole.SYSTEM, "be brief"), msg(MessageRole.USER, "q1")])
    assert [m.content for m in await store.aget_messages(key)] == ["be brief", "q1"]

    await store.async_add_message(key, msg(MessageRole.ASSISTANT, "a1"))
    deleted = await store.adelete_message(key, 0)
    assert deleted is not None and deleted.content == "be brief"
    last = await store.adelete_last_message(key)
    assert last is not None and last.content == "a1"
    assert await store.adelete_message(key, 5) is None
    remaining = await store.adelete_messages(key)
    assert remaining is not None and [m.content for m in remaining] == ["q1"]
    assert await store.aget_messages(key) == []
    assert await store.adelete_last_message(key) is None


async def test_a_message_written_is_activity_a_delete_is_not(runtime: Runtime) -> None:
    """A chat memory's message moves its session up the recent chats (last_active_at); deleting one
    changes the session (updated_at) but is no activity."""
    store = PostgresChatStore(runtime.pool)
    key = str(uuid.uuid4())
    await store.async_add_message(key, msg(MessageRole.USER, "hello"))
    first = await sessions.get_session(runtime.pool, uuid.UUID(key))
    await store.async_add_message(key, msg(MessageRole.ASSISTANT, "hi"))
    added = await sessions.get_session(runtime.pool, uuid.UUID(key))
    assert added.last_active_at > first.last_active_at and added.updated_at > first.updated_at
    await store.adelete_last_message(key)
    deleted = await sessions.get_session(runtime.pool, uuid.UUID(key))
    assert deleted.last_active_at == added.last_active_at and deleted.updated_at > added.updated_at
    await store.aset_messages(key, [msg(MessageRole.USER, "again")])
    reset = await sessions.get_session(runtime.pool, uuid.UUID(key))
    assert reset.last_active_at > deleted.last_active_at
    listed, _ = await session_listing.list_sessions(runtime.pool, limit=1, offset=0, include_archived=True)
    assert listed[0].id == uuid.UUID(key)


async def test_invalid_keys_and_roles_are_rejected(runtime: Runtime) -> None:
    store = PostgresChatStore(runtime.pool)
    with pytest.raises(ValueError, match="UUID"):
        await store.aget_messages("user-1")
    with pytest.raises(ValueError, match="system/user/assistant"):
        await store.async_add_message(str(uuid.uuid4()), msg(MessageRole.TOOL, "tool output"))


async def test_sync_methods_work_from_threads_and_refuse_on_the_loop(runtime: Runtime) -> None:
    store = PostgresChatStore(runtime.pool)
    key = str(uuid.uuid4())
    await asyncio.to_thread(store.add_message, key, msg(MessageRole.USER, "from a thread"))
    assert [m.content for m in await asyncio.to_thread(store.get_messages, key)] == ["from a thread"]
    with pytest.raises(RuntimeError, match="aget_messages"):
        store.get_messages(key)


async def test_a_llamaindex_chat_engine_persists_through_the_store(runtime: Runtime) -> None:
    store = PostgresChatStore(runtime.pool)
    key = str(uuid.uuid4())
    memory = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key=key, token_limit=3000)
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=5), memory=memory)
    await engine.achat("first question")
    await engine.achat("second question")
    stored = await store.aget_messages(key)
    assert [m.role for m in stored] == [MessageRole.USER, MessageRole.ASSISTANT] * 2
    assert stored[0].content == "first question" and stored[2].content == "second question"
    # A fresh memory over the same key (think: after a restart) sees the whole conversation.
    again = ChatMemoryBuffer.from_defaults(chat_store=PostgresChatStore(runtime.pool), chat_store_key=key)
    assert len(await again.aget()) == 4


async def test_session_sql_not_found_and_concurrent_exchanges_stay_paired(runtime: Runtime) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFoundError, match=str(missing)):
        await sessions.get_session(runtime.pool, missing)
    with pytest.raises(NotFoundError):
        await sessions.delete_session(runtime.pool, missing)
    with pytest.raises(NotFoundError):
        await sessions.list_messages(runtime.pool, missing)

    session = await sessions.create_session(runtime.pool, title=None, search_type="hybrid", llm_model=None)

    async def exchange(i: int) -> tuple[int, int]:
        return await sessions.append_exchange(
            runtime.pool,
            session.id,
            question=f"q{i}",
            answer=f"a{i}",
            answer_metadata={"sources": []},
            title_if_missing=f"title {i}",
        )

    results = await asyncio.gather(*(exchange(i) for i in range(8)))
    assert all(assistant == user + 1 for user, assistant in results)  # each pair adjacent
    history = await sessions.list_messages(runtime.pool, session.id)
    assert len(history) == 16
    for user, assistant in zip(history[::2], history[1::2], strict=True):
        assert user.role == "user" and assistant.role == "assistant"
        assert user.content[1:] == assistant.content[1:]
    # The first writer named the session; later ones did not overwrite it.
    first = history[0].content[1:]
    assert (await sessions.get_session(runtime.pool, session.id)).title == f"title {first}"
