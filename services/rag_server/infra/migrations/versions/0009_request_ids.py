"""The request that queued a task: `job_tasks.request_id`.

The X-Request-Id of the upload (or of the retry that queued the task again) is stored on the task and
sent in its queue message, so the worker's log lines for the task carry the same id as the server's
lines for the request, and an operator can go from a task to the request that made it. NULL for tasks
queued before this migration or outside a request (the CLI's retry).

Revision ID: 0009_request_ids
Revises: 0008_active_task_index
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0009_request_ids"
down_revision = "0008_active_task_index"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE job_tasks ADD COLUMN request_id text;
COMMENT ON COLUMN job_tasks.request_id IS
    'X-Request-Id of the request that queued it last (upload or retry); in its log lines too';
"""

DOWNGRADE = """
ALTER TABLE job_tasks DROP COLUMN request_id;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
