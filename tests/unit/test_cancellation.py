"""Why background loops bound their awaits with `asyncio.timeout`, not `asyncio.wait_for`.

On Python 3.11, `wait_for` returns its awaitable's result when a cancel arrives in the same loop
iteration as that result: the cancel is lost. ReadRouting.run (infra/replicas.py) checks its replicas
every 0.2 s in the tests; a shutdown's cancel that met a check's statement completing left the loop
running, and the shutdown awaited it for ever (the CI hang the watchdog named in test_read_replicas.py).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import pytest


async def cancelled_as_it_completes(bounded: Callable[[asyncio.Future[int]], Awaitable[int]]) -> object:
    """Cancel a task in the iteration its awaited future gets a result; what the task ends with."""
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(bounded(done))
    await asyncio.sleep(0)  # the task now awaits `done`
    done.set_result(1)
    task.cancel()
    [outcome] = await asyncio.gather(task, return_exceptions=True)
    return outcome


async def test_asyncio_timeout_keeps_a_cancel_that_arrives_as_the_awaited_completes() -> None:
    async def with_timeout(done: asyncio.Future[int]) -> int:
        async with asyncio.timeout(5):
            return await done

    assert isinstance(await cancelled_as_it_completes(with_timeout), asyncio.CancelledError)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 rewrote wait_for on asyncio.timeout")
async def test_wait_for_loses_it_on_this_python() -> None:
    async def with_wait_for(done: asyncio.Future[int]) -> int:
        return await asyncio.wait_for(done, 5)

    assert await cancelled_as_it_completes(with_wait_for) == 1  # the cancel is gone
