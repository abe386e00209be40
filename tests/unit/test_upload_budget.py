"""The API's budget of upload bytes in memory (api/upload_budget.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

from rag_server.api import upload_budget
from rag_server.api.upload_budget import UploadBudget
from rag_server.errors import BusyError


async def test_uploads_share_the_budget_and_one_past_it_waits_for_room() -> None:
    budget = UploadBudget(100)
    async with budget.holding(60), budget.holding(40):  # both fit: at once
        assert budget.held == 100
        third = asyncio.create_task(_hold(budget, 30))
        await asyncio.sleep(0.05)
        assert not third.done()  # waits for room
    assert await third == 30
    assert budget.held == 0


async def test_an_upload_larger_than_the_whole_budget_is_taken_alone() -> None:
    budget = UploadBudget(100)
    assert await _hold(budget, 500) == 500


async def test_no_room_in_time_is_a_busy_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload_budget, "WAIT_S", 0.05)
    budget = UploadBudget(100)
    async with budget.holding(80):
        with pytest.raises(BusyError, match="other uploads"):
            await _hold(budget, 30)
    assert budget.held == 0


async def _hold(budget: UploadBudget, size: int) -> int:
    async with budget.holding(size):
        return budget.held


async def test_an_upload_cancelled_while_it_holds_the_budget_gives_it_back() -> None:
    """A client gone mid-upload cancels its request: what it held must come back, else the budget shrank
    for the life of the process and later uploads waited for nothing."""
    budget = UploadBudget(100)
    holding = asyncio.Event()

    async def stalled() -> None:
        async with budget.holding(100):
            holding.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(stalled())
    await holding.wait()
    waiting = asyncio.create_task(_hold(budget, 60))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    task.cancel()
    assert await waiting == 60
    assert budget.held == 0


async def test_uploads_cancelled_at_any_moment_never_leave_the_others_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Clients leaving while they wait or hold: every upload not cancelled is stored without waiting out
    WAIT_S, and the budget ends empty each round."""
    monkeypatch.setattr(upload_budget, "WAIT_S", 5.0)
    budget = UploadBudget(100)
    rng = random.Random(7)

    async def upload(size: int) -> int:
        async with budget.holding(size):
            await asyncio.sleep(rng.choice([0, 0, 0.001, 0.002]))
            return size

    for _ in range(20):
        tasks = [asyncio.create_task(upload(rng.choice([30, 50, 70]))) for _ in range(30)]
        for _ in range(10):
            await asyncio.sleep(rng.choice([0, 0.001]))
            rng.choice(tasks).cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert not [r for r in results if isinstance(r, BusyError)]
        assert budget.held == 0
