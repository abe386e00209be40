"""A replacement's new file (`job_tasks.new_content`, `new_metadata`) cleared where no retry can use it:
what the code has cleared since 2026-12-06, done once for the rows written before.

A replacement carries its new bytes on its task row until its swap; a failed one keeps them, so that an
operator's retry (operations._retry_locked) can queue it again. A retry needs the task's document, at
the version the task replaces (`operations._replacement_refusal`). Two things have cleared the bytes since
the fix of the eighth QA round (reports/qa-2026-12-05.md):

- a document delete (deletion._delete_locked), on every task of the document, whatever its status: the
  row stays (ON DELETE SET NULL), with `document_id` NULL;
- a swap (replacement.swap_in), on the document's failed tasks: each replaces an older version now.

Before, both kept the bytes. Here every row the code would have cleared: `document_id` NULL (only a
delete makes it NULL on a task that holds a file: a replacement is always queued for a document; the
CHECK job_tasks_replacement_bytes keeps a file to replacement rows), any status: a failed one, a
completed one's `new_metadata` (the swap clears `new_content` alone), an unfinished one a delete did not
see (the worker's start_task skips a task without a document, a retry refuses it); and a failed
replacement of an older version than its document's, which only a swap since makes. Never a failed
replacement of the current version (a retry's), nor anything queued or processing for a document that
exists (one active task per document: none replaces an older version), nor a completed one's
`new_metadata` while its document exists (the code keeps it too). Versions only grow and a document
never comes back, so a row matching here stays unusable whatever runs beside it.

One statement: it reads the heap alone (`IS NOT NULL` needs no detoasting) and writes only rows that
hold a file, few (failed replacements); their TOAST chunks are freed by the next vacuum. 302,000 tasks,
2,000 of them holding 64 KiB: 1,000 cleared in 0.04 s here (a sequential scan, the document by its key).
Row locks only on those rows; a delete of their document waits for the commit, the pruner skips them
(SKIP LOCKED). Their batches can then be pruned (retention._KEEPS_BATCH kept any task with bytes).
Migrations run as the tables' owner, to whom row-level security does not apply (0004: ENABLE, not
FORCE): every collection's rows. Plain SQL, the same on ParadeDB.

Nothing to undo: the bytes are gone and no schema changed, so the downgrade does nothing.

Revision ID: 0024_stale_replacement_bytes
Revises: 0023_bm25_remove_by_chunk
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0024_stale_replacement_bytes"
down_revision = "0023_bm25_remove_by_chunk"
branch_labels = None
depends_on = None

UPGRADE = """
UPDATE job_tasks t SET new_content = NULL, new_metadata = NULL
WHERE (t.new_content IS NOT NULL OR t.new_metadata IS NOT NULL)
  AND (t.document_id IS NULL
       OR (t.status = 'failed'
           AND t.replaces_version < (SELECT d.version FROM documents d WHERE d.id = t.document_id)));
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    pass
