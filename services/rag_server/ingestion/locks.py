"""A request's bounded wait for a document's rows (its task's, then its own).

A worker's final write holds its task and document rows until its chunks are written: a second or two for
most files, minutes for a big one (73,000 chunks: 18 minutes). A request that edits the document (its
metadata, a new file for it) used to wait for them until RAG_API_DB_TIMEOUT_S, then answer 503 "the
database did not answer in time" with nothing written, while the database was fine. It waits LOCK_WAIT_S
(PostgreSQL's lock_timeout, for this transaction's statements inside the block), then a DocumentBusyError
(409, code `document_busy`) says what holds the document. Deletes do not wait at all: the write gives
way to them (ingestion/deletion.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from rag_server.errors import DocumentBusyError

# Long enough for a small file's final write, or another request's edit of the same document.
LOCK_WAIT_S = 5.0


@asynccontextmanager
async def document_rows(c: asyncpg.Connection, what: str) -> AsyncIterator[None]:
    """Inside the block, a row lock waited for more than LOCK_WAIT_S is a DocumentBusyError naming `what`
    ("document <id>", "one of these documents"). The transaction is then aborted: raised, not retried."""
    before = await c.fetchval(
        "SELECT current_setting('lock_timeout'), set_config('lock_timeout', $1, true)",
        f"{round(LOCK_WAIT_S * 1000)}ms",
    )
    try:
        yield
    except asyncpg.LockNotAvailableError:
        raise DocumentBusyError(
            f"{what} is being written (a new version's chunks, which take minutes for a big file, or another"
            f" change to it) and was not free within {LOCK_WAIT_S:g} s: nothing was changed; try again once"
            " its task is finished"
        ) from None
    await c.execute("SELECT set_config('lock_timeout', $1, true)", before)
