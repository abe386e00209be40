"""chat/llm_stream.py's reader task: a close of the stream cancels the task reading the provider, and that
cancel is never lost, whenever it arrives (the provider's stream is closed at once, not after its answer).
The provider here is a LlamaIndex LLM whose chunks wait on events the test sets: the race is made exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage, ChatResponse, MockLLM
from pydantic import PrivateAttr

from rag_server.chat.answer import LLMFailure
from rag_server.chat.llm_stream import stream


class HeldLLM(MockLLM):
    """Chunk i is sent once `go[i]` is set; `closed`: its stream ended (closed, cancelled)."""

    _go: list[asyncio.Event] = PrivateAttr(default_factory=lambda: [asyncio.Event() for _ in range(3)])
    _closed: bool = PrivateAttr(default=False)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:  # type: ignore[override]
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[ChatResponse]:
        try:
            for i, go in enumerate(self._go):
                await go.wait()
                yield ChatResponse(message=ChatMessage(role="assistant", content=""), delta=f"t{i}")
        finally:
            self._closed = True


async def test_a_close_meeting_a_chunk_as_it_arrives_still_ends_the_provider_stream() -> None:
    """Python 3.11's wait_for (under `guarded`) returns a result that arrived in the iteration its task
    was cancelled, and drops the cancel: the reader then read the provider's whole answer for nobody,
    and the stream's close waited for it (here: until the 30 s timeout)."""
    llm = HeldLLM()
    llm._go[0].set()
    tokens = stream(llm, [ChatMessage(role="user", content="q")], 30)
    assert await anext(tokens) == "t0"
    await asyncio.sleep(0)  # the reader now awaits chunk 1
    llm._go[1].set()
    await asyncio.sleep(0)  # chunk 1 arrives; the reader wakes in the next iteration
    closing = asyncio.ensure_future(tokens.aclose())
    try:
        done, _ = await asyncio.wait((closing,), timeout=2)
        assert done, "closing the stream waited for the provider's next chunk"
        assert llm._closed
    finally:
        for go in llm._go:
            go.set()
        await closing


class BrokenLLM(HeldLLM):
    """A provider whose stream raises what is no Exception (a stray CancelledError from its own code)."""

    async def _chunks(self) -> AsyncIterator[ChatResponse]:
        yield ChatResponse(message=ChatMessage(role="assistant", content=""), delta="t0")
        raise asyncio.CancelledError


async def test_a_reader_ending_without_an_end_is_a_failure_not_a_hang() -> None:
    """The answer waited on the queue for ever when its reader ended without putting the end there."""
    tokens = stream(BrokenLLM(), [ChatMessage(role="user", content="q")], 30)
    assert await anext(tokens) == "t0"
    with pytest.raises(LLMFailure, match="stopped"):
        await asyncio.wait_for(anext(tokens), 5)
