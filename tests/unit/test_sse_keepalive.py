"""api/sse.py's keep_alive: a beat while the next piece is late, the late piece itself intact, and on a
close or a cancel the piece under way cancelled and its iterator closed (a client that left ends its LLM
request). The inner iterators wait on events the tests set: no assertion depends on how fast anything is."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import pytest
from starlette.requests import ClientDisconnect

from rag_server.api.sse import KEEP_ALIVE, event_stream, keep_alive

BEAT = ": beat"
EVERY_S = 0.01


@dataclass
class Slow:
    """Pieces "a", then "b" once `go` is set; records how it ended."""

    go: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False
    closed: bool = False
    cleaned_up: bool = False

    async def pieces(self) -> AsyncIterator[str]:
        try:
            yield "a"
            await self.go.wait()
            yield "b"
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        except GeneratorExit:
            self.closed = True
            raise
        finally:
            await asyncio.sleep(0)  # cleanup that awaits, as closing an HTTP stream does
            self.cleaned_up = True


async def test_a_late_piece_comes_after_beats_and_is_not_lost() -> None:
    slow = Slow()
    stream = keep_alive(slow.pieces(), EVERY_S, BEAT)
    assert await anext(stream) == "a"
    assert await anext(stream) == BEAT  # "b" is late
    assert await anext(stream) == BEAT
    slow.go.set()
    rest = [piece async for piece in stream]
    assert rest[-1] == "b" and set(rest[:-1]) <= {BEAT}
    assert not slow.cancelled and slow.cleaned_up


async def test_a_failure_of_the_inner_iterator_comes_out_as_it_is() -> None:
    async def failing() -> AsyncIterator[str]:
        yield "a"
        raise ValueError("broken")

    stream = keep_alive(failing(), EVERY_S, BEAT)
    assert await anext(stream) == "a"
    with pytest.raises(ValueError, match="broken"):
        await anext(stream)


async def test_closing_it_while_a_piece_is_late_cancels_that_piece_and_closes_the_iterator() -> None:
    slow = Slow()
    stream = keep_alive(slow.pieces(), EVERY_S, BEAT)
    assert [await anext(stream), await anext(stream)] == ["a", BEAT]
    await stream.aclose()  # type: ignore[attr-defined]
    assert slow.cancelled and slow.cleaned_up


async def test_closing_it_between_pieces_closes_the_iterator() -> None:
    slow = Slow()
    stream = keep_alive(slow.pieces(), EVERY_S, BEAT)
    assert await anext(stream) == "a"
    await stream.aclose()  # type: ignore[attr-defined]
    assert slow.closed and slow.cleaned_up


async def test_a_cancelled_reader_cancels_the_late_piece_and_waits_for_its_cleanup() -> None:
    slow = Slow()
    stream = keep_alive(slow.pieces(), EVERY_S, BEAT)
    beaten = asyncio.Event()

    async def read() -> None:
        async for piece in stream:
            if piece == BEAT:
                beaten.set()

    reader = asyncio.create_task(read())
    await beaten.wait()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    assert reader.cancelled() and slow.cancelled and slow.cleaned_up


async def test_a_cancel_scope_cancelling_at_every_await_still_waits_for_the_cleanup() -> None:
    # Starlette streams a response in an anyio task group, cancelled when the client disconnects: its
    # scope cancels the reading task again at each await, the cleanup's own too.
    slow = Slow()
    stream = keep_alive(slow.pieces(), EVERY_S, BEAT)
    async with anyio.create_task_group() as group:

        async def read() -> None:
            async for piece in stream:
                if piece == BEAT:
                    group.cancel_scope.cancel()

        group.start_soon(read)
    assert slow.cancelled and slow.cleaned_up


async def test_zero_is_the_iterator_itself() -> None:
    async def pieces() -> AsyncIterator[str]:
        yield "a"

    inner = pieces()
    assert keep_alive(inner, 0, BEAT) is inner


# --- the response: a client leaving while a piece is being written ------------------------------------


def _scope(spec_version: str) -> dict[str, object]:
    return {"type": "http", "asgi": {"spec_version": spec_version}, "method": "POST", "path": "/"}


@pytest.mark.parametrize("every_s", [EVERY_S, 0])
async def test_a_write_failing_on_a_gone_client_closes_the_stream_at_once(every_s: float) -> None:
    """ASGI 2.4 servers raise OSError from `send` to a gone client. The iterator was left suspended at its
    `yield`, so the piece under way (the LLM request) ran on until garbage collection."""
    slow = Slow()
    written: list[bytes] = []

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            written.append(message["body"])  # type: ignore[arg-type]
            raise OSError("broken pipe")

    async def receive() -> dict[str, object]:
        await asyncio.Event().wait()
        return {}

    gc.disable()  # nothing is left to the collector
    try:
        with pytest.raises(ClientDisconnect):
            await event_stream(slow.pieces(), every_s)(_scope("2.4"), receive, send)
        assert written == [b"a"]
        assert slow.cleaned_up and (slow.closed or slow.cancelled)
    finally:
        gc.enable()


async def test_a_disconnect_while_a_beat_is_being_written_cancels_the_late_piece_at_once() -> None:
    """Older ASGI servers report the disconnect on `receive`; Starlette then cancels the write under way,
    and the iterator was left suspended at the beat's `yield` with its late piece running."""
    slow = Slow()
    writing_beat = asyncio.Event()

    async def send(message: dict[str, object]) -> None:
        if message.get("body") == KEEP_ALIVE.encode():
            writing_beat.set()
            await asyncio.Event().wait()  # a write that never completes: the socket is gone

    async def receive() -> dict[str, object]:
        await writing_beat.wait()
        return {"type": "http.disconnect"}

    gc.disable()
    try:
        await event_stream(slow.pieces(), EVERY_S)(_scope("2.3"), receive, send)
        assert slow.cancelled and slow.cleaned_up
    finally:
        gc.enable()
