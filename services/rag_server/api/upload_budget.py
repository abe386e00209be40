"""How many uploaded bytes the API process holds in memory at once (RAG_UPLOAD_MEMORY_BYTES).

An upload's files are read whole into memory and stored in one transaction (the bytes go into
PostgreSQL with the documents and their tasks). The form spools them to disk first, so waiting costs no
memory: an upload whose bytes would take the process past the budget waits until earlier ones end, up to
WAIT_S, then is a 503 with Retry-After. Three editors' uploads of 392 MB at once took the API from 0.3 to
1.34 GB; without a bound, N at once held N x 512 MB (RAG_MAX_UPLOAD_REQUEST_BYTES).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rag_server.errors import BusyError

# Long enough for a large upload ahead to be stored; short enough for a client to hear back.
WAIT_S = 30.0


class UploadBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        # Set (and replaced) at each release. A release awaits nothing, so a cancelled upload can
        # neither keep its bytes nor leave the waiters asleep (a Condition's notify needs its lock).
        self._released = asyncio.Event()

    def _fits(self, size: int) -> bool:
        return self.held == 0 or self.held + size <= self.limit

    @asynccontextmanager
    async def holding(self, size: int) -> AsyncIterator[None]:
        """`size` bytes of the budget for the block, waited for up to WAIT_S (else a BusyError). One upload
        larger than the whole budget is taken when it is alone (else it could never be)."""
        try:
            async with asyncio.timeout(WAIT_S):
                while not self._fits(size):
                    await self._released.wait()
        except TimeoutError:
            raise BusyError(
                f"The server is storing other uploads ({self.held / 2**20:.0f} MB held of its "
                f"{self.limit / 2**20:.0f} MB for them); send this one again shortly."
            ) from None
        self.held += size  # no await since the check: no other upload took the room meanwhile
        try:
            yield
        finally:
            self.held -= size
            self._released.set()
            self._released = asyncio.Event()
