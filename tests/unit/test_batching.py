from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from rag_server.infra.batching import CoalescingEmbedder


class RecordingModel:
    """Stands in for the model's forward pass: row i of the output encodes the text's value."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.calls: list[list[str]] = []
        self.delay_s = delay_s
        self._gate = threading.Event()
        self._gate.set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self._gate.wait(5)
        threading.Event().wait(self.delay_s)
        return np.array([[float(t)] for t in texts], dtype=np.float32)


async def test_each_caller_gets_its_own_rows() -> None:
    model = RecordingModel()
    embedder = CoalescingEmbedder(model, max_batch=64)
    results = await asyncio.gather(*(embedder.embed([str(i), str(i + 100)]) for i in range(10)))
    for i, rows in enumerate(results):
        assert rows[:, 0].tolist() == [i, i + 100]


async def test_concurrent_calls_share_batches() -> None:
    model = RecordingModel()
    embedder = CoalescingEmbedder(model, max_batch=64)
    await asyncio.gather(*(embedder.embed([str(i)]) for i in range(16)))
    # The first caller runs alone; everything that queued behind it goes in one more batch.
    assert len(model.calls) == 2
    assert sorted(t for call in model.calls for t in call) == sorted(str(i) for i in range(16))


async def test_batches_respect_max_batch_and_nobody_is_left_waiting() -> None:
    model = RecordingModel(delay_s=0.01)
    embedder = CoalescingEmbedder(model, max_batch=4)
    results = await asyncio.gather(*(embedder.embed([str(i)]) for i in range(13)))
    assert [r[0, 0] for r in results] == list(range(13))
    assert max(len(call) for call in model.calls) <= 4


async def test_a_failing_batch_fails_its_callers_and_the_next_call_works() -> None:
    calls = 0

    def flaky(texts: list[str]) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model exploded")
        return np.zeros((len(texts), 1), dtype=np.float32)

    embedder = CoalescingEmbedder(flaky)
    with pytest.raises(RuntimeError, match="exploded"):
        await embedder.embed(["a"])
    assert (await embedder.embed(["b"])).shape == (1, 1)


async def test_cancelled_leader_does_not_strand_the_others() -> None:
    model = RecordingModel(delay_s=0.2)
    embedder = CoalescingEmbedder(model)
    leader = asyncio.create_task(embedder.embed(["1"]))
    await asyncio.sleep(0.05)  # the leader is inside the model call
    followers = [asyncio.create_task(embedder.embed([str(i)])) for i in (2, 3)]
    await asyncio.sleep(0)
    leader.cancel()
    results = await asyncio.gather(*followers)
    assert [r[0, 0] for r in results] == [2, 3]


async def test_texts_of_callers_who_left_are_not_embedded() -> None:
    # A search whose client disconnects is cancelled (api/disconnect.py): its query, waiting for the
    # model or re-queued from a batch cut short, was embedded by the next caller for nobody.
    model = RecordingModel(delay_s=0.2)
    embedder = CoalescingEmbedder(model)
    leader = asyncio.create_task(embedder.embed(["1"]))
    await asyncio.sleep(0.05)  # the leader is inside the model call
    waiting = asyncio.create_task(embedder.embed(["2"]))
    await asyncio.sleep(0)
    waiting.cancel()
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.gather(leader, waiting)
    assert (await embedder.embed(["3"]))[0, 0] == 3
    assert model.calls == [["1"], ["3"]]
