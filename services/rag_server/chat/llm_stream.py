"""Streaming an answer from the LLM: token deltas, each within the timeout, and a stream that closes the
provider's HTTP stream whenever it is closed or cancelled (a client that left stops the generation)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from llama_index.core.llms import LLM, ChatMessage, ChatResponse

from rag_server.chat.answer import LLMFailure, count_usage, guarded
from rag_server.chat.usage import TokenUsage
from rag_server.infra.llm import reports_finish
from rag_server.infra.metrics import observe_llm
from rag_server.text import clean_generated


@dataclass
class StreamEnd:
    """Why the provider ended a stream, as it says: OpenAI's `finish_reason` ("length": max_tokens was
    reached), Ollama's `done_reason`; None when it said nothing."""

    reason: str | None = None


def reported_finish(raw: Any) -> str | None:
    """The finish reason in one raw stream chunk (LlamaIndex's `ChatResponse.raw`), if it has one."""
    if isinstance(raw, dict):
        choices, done = raw.get("choices"), raw.get("done_reason")
    else:
        choices, done = getattr(raw, "choices", None), None
    if isinstance(done, str):
        return done
    if choices:
        first = choices[0]
        reason = (
            first.get("finish_reason") if isinstance(first, dict) else getattr(first, "finish_reason", None)
        )
        return reason if isinstance(reason, str) else None
    return None


async def stream(
    llm: LLM,
    messages: list[ChatMessage],
    timeout_s: float,
    usage: TokenUsage | None = None,
    end: StreamEnd | None = None,
    **options: Any,
) -> AsyncGenerator[str, None]:
    """Token deltas; the timeout applies to the first token and to every gap. Raises LLMFailure.
    `options` go to the provider's call (only what infra.llm.call_options allows for this LLM);
    `usage` adds what the provider reports (its last chunk); `end` gets why it stopped."""
    started = time.perf_counter()
    try:
        responses = await guarded(llm, llm.astream_chat(messages, **options), timeout_s)
    except LLMFailure as exc:
        observe_llm(llm, "stream", started, exc.__cause__ or exc)
        raise
    received: asyncio.Queue[ChatResponse | LLMFailure | None] = asyncio.Queue()
    reader = asyncio.create_task(_read(llm, responses, timeout_s, received))
    finished = False  # the provider said why it stopped
    try:
        while (response := await received.get()) is not None:
            if isinstance(response, LLMFailure):
                observe_llm(llm, "stream", started, response.__cause__ or response)
                raise response
            count_usage(usage, response.raw)
            if (reason := reported_finish(response.raw)) is not None:
                finished = True
                if end is not None:
                    end.reason = reason
            if response.delta:
                # What PostgreSQL cannot store (NUL, a lone surrogate) would fail the answer's write.
                yield clean_generated(response.delta)
        if not finished and reports_finish(llm):
            # OpenAI's protocol ends each choice with a finish_reason: a stream closed without one (an
            # empty choice list, a plain end) was cut short, and its first words are no answer.
            failure = LLMFailure(
                "The LLM's answer stopped before its end (its stream closed without a finish reason); "
                "showing the extractive answer."
            )
            observe_llm(llm, "stream", started, failure)
            raise failure
        observe_llm(llm, "stream", started)
    finally:
        reader.cancel()
        await asyncio.wait((reader,))


async def _read(
    llm: LLM,
    responses: AsyncIterator[ChatResponse],
    timeout_s: float,
    received: asyncio.Queue[ChatResponse | LLMFailure | None],
) -> None:
    """The provider's stream into `received`, read ahead: this task is always awaiting the provider's next
    chunk, so cancelling it closes the HTTP stream through every layer (LlamaIndex's, the openai
    package's). Closing those layers' generators instead (a `yield` left by a client that went away)
    reaches none below them: the provider then generated on for nobody. The queue is unbounded; an
    answer is a bounded number of chunks."""
    try:
        while True:
            try:
                received.put_nowait(await guarded(llm, anext(responses), timeout_s))
            except StopAsyncIteration:
                received.put_nowait(None)
                return
            except LLMFailure as exc:
                received.put_nowait(exc)
                return
    except BaseException as exc:
        # Cancelled (the stream closed: nobody reads this), or what guarded passes through from the
        # provider: the answer must not wait on the queue for an end that never comes.
        failure = LLMFailure(
            f"The LLM's stream stopped ({type(exc).__name__}); showing the extractive answer."
        )
        received.put_nowait(failure)
        raise
    finally:
        aclose = getattr(responses, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
