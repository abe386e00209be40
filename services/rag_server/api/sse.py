"""Server-Sent Event streams (chat's /query/stream, /v1/chat/completions, /v1/responses): an SSE comment
whenever the next event is late, so that a client or proxy with an idle read timeout shorter than the
wait (a local LLM's first token on a long prompt, a follow-up's condensing call) does not give up on an
answer that is coming. Every SSE client ignores a line starting with `:` (the openai package's too)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from typing import Any, TypeVar, cast

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

T = TypeVar("T")

KEEP_ALIVE = ": keep-alive\n\n"
_END = object()


class _ClosingStreamingResponse(StreamingResponse):
    """Closes its body when the response ends, however it ends. A client leaving while a piece is being
    written stops Starlette in `send`, with the body suspended at its `yield`: Starlette drops it unclosed,
    and what it was waiting on (the LLM request, the answer's write) ran on until garbage collection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                # A task of its own: the request's task may be cancelled again at every await.
                await _await_through_cancels(asyncio.create_task(aclose()))


def event_stream(events: AsyncIterator[str], keepalive_s: float) -> StreamingResponse:
    """The response streaming `events`, with a keep-alive comment every `keepalive_s` (0: none) of a
    wait for the next one."""
    return _ClosingStreamingResponse(
        keep_alive(events, keepalive_s, KEEP_ALIVE),
        media_type="text/event-stream",
        # X-Accel-Buffering: nginx would hold the events (and the keep-alives) in its buffer.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def keep_alive(pieces: AsyncIterator[T], every_s: float, beat: T) -> AsyncIterator[T]:
    """`pieces`, with `beat` in between each time the next piece has been awaited `every_s` (0: never).

    The late piece is not cancelled by a beat (asyncio.wait_for on `__anext__` would cancel it): it is
    awaited in a task of its own, which a beat leaves running. Closed or cancelled (the client left), the
    wrapper cancels that task and closes `pieces`, and waits for both: their cleanup closes the LLM
    request."""
    if every_s <= 0:
        return pieces
    return _with_beats(pieces, every_s, beat)


async def _with_beats(pieces: AsyncIterator[T], every_s: float, beat: T) -> AsyncIterator[T]:
    # Every step of `pieces` runs in this one context, as it would in the reader's task: a context
    # variable one step sets is seen by the next (a step's own task would start from a fresh copy).
    context = contextvars.copy_context()
    step: asyncio.Task[object] | None = None
    ended = False
    try:
        while True:
            if step is None:
                step = asyncio.create_task(_next(pieces), context=context)
            done, _ = await asyncio.wait((step,), timeout=every_s)
            if not done:
                yield beat
                continue
            piece, step = step.result(), None
            if piece is _END:
                ended = True
                return
            yield cast(T, piece)
    finally:
        if not ended:
            # A task of its own: the reader's task may be cancelled again at every await (anyio's
            # cancel scopes, Starlette's streams), which would cut the cleanup short.
            stop = asyncio.create_task(_stop(pieces, step), context=context)
            await _await_through_cancels(stop)


async def _next(pieces: AsyncIterator[T]) -> object:
    try:
        return await anext(pieces)
    except StopAsyncIteration:
        # The end as a value: raised again inside _with_beats, an async generator, it would be a
        # RuntimeError (PEP 479).
        return _END


async def _stop(pieces: AsyncIterator[T], step: asyncio.Task[object] | None) -> None:
    if step is not None:
        step.cancel()
        await asyncio.wait((step,))
    aclose = getattr(pieces, "aclose", None)
    if aclose is not None:
        await aclose()


async def _await_through_cancels(task: asyncio.Task[Any]) -> None:
    """Await `task` to its end even if this task is cancelled meanwhile (then cancelled once it ended)."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()
