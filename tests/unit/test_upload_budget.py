"""The API's budget of upload bytes in memory (api/upload_budget.py)."""

from __future__ import annotations

import asyncio

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
