"""Coalescing of concurrent small embedding calls into one model batch.

One MiniLM forward pass (ONNX Runtime, 2 cores) costs ~5 ms for one query, ~20 ms for 8 together. When
several searches arrive at once, embedding them one by one queues them behind each other; batching
them gives each its vector sooner. An idle embedder adds no delay: the first caller runs at once
with whatever is pending, and callers arriving meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

EmbedSync = Callable[[list[str]], np.ndarray]


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future[np.ndarray]


@dataclass
class _LoopState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list[_Request] = field(default_factory=list)


class CoalescingEmbedder:
    """Runs `embed_sync` in a worker thread, one batch at a time per event loop.

    The caller that takes the lock embeds every pending request (its own and the ones queued
    behind it, up to `max_batch` texts); a caller whose request was served meanwhile returns
    without running the model.
    """

    def __init__(self, embed_sync: EmbedSync, max_batch: int = 64) -> None:
        self._embed_sync = embed_sync
        self._max_batch = max_batch
        # asyncio primitives belong to one loop; the embedder is shared process-wide.
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
        return state

    async def embed(self, texts: list[str]) -> np.ndarray:
        state = self._state()
        request = _Request(texts, asyncio.get_running_loop().create_future())
        state.pending.append(request)
        try:
            async with state.lock:
                # Usually one round; more when requests queued ahead of ours exceed max_batch.
                while not request.future.done():
                    await self._run_batch(state)
        except asyncio.CancelledError:
            # Nobody waits for these texts any more (a search whose client left): the next lock
            # holder must not spend the model on them.
            request.future.cancel()
            with contextlib.suppress(ValueError):
                state.pending.remove(request)
            raise
        return await request.future

    def _take_batch(self, state: _LoopState) -> list[_Request]:
        batch: list[_Request] = []
        size = 0
        while state.pending and (not batch or size + len(state.pending[0].texts) <= self._max_batch):
            request = state.pending.pop(0)
            if request.future.done():  # cancelled: its caller left
                continue
            batch.append(request)
            size += len(request.texts)
        return batch

    async def _run_batch(self, state: _LoopState) -> None:
        batch = self._take_batch(state)
        texts = [text for request in batch for text in request.texts]
        try:
            vectors = await asyncio.to_thread(self._embed_sync, texts)
        except asyncio.CancelledError:
            # Our caller went away: hand the others back so the next lock holder serves them.
            state.pending[:0] = [r for r in batch if not r.future.done()]
            raise
        except Exception as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        start = 0
        for request in batch:
            end = start + len(request.texts)
            if not request.future.done():
                request.future.set_result(vectors[start:end])
            start = end
