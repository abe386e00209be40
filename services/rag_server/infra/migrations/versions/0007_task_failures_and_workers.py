"""Crashes cost seconds, not a document's retries: `job_tasks.failures` and `job_tasks.worker_id`.

`attempts` keeps meaning deliveries (pgmq read_ct: every time a worker took the task, including the
times it died on it); `failures` counts the times processing the document raised an error the worker
recorded, and only those count towards RAG_WORKER_MAX_ATTEMPTS. `worker_id` names the worker process
processing the task: each worker holds the session advisory lock (WORKER_LOCK_CLASS, worker_id) for its
whole life, so a task `processing` under a worker whose lock no session holds belongs to a dead worker
and is re-queued at once (ingestion/recovery.py). Ids come from a cycling sequence.

Revision ID: 0007_task_failures_and_workers
Revises: 0006_chat_external_ids
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0007_task_failures_and_workers"
down_revision = "0006_chat_external_ids"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE job_tasks
    ADD COLUMN failures integer NOT NULL DEFAULT 0,
    ADD COLUMN worker_id integer;
COMMENT ON COLUMN job_tasks.attempts IS 'deliveries: times a worker took the task (pgmq read_ct)';
COMMENT ON COLUMN job_tasks.failures IS 'times processing failed with an error the worker recorded';
COMMENT ON COLUMN job_tasks.worker_id IS 'the worker processing it: its advisory lock shows it alive';
CREATE SEQUENCE job_worker_ids AS integer MINVALUE 1 CYCLE;
-- The dead-worker scan reads only tasks in progress: a small partial index, whatever the table's size.
CREATE INDEX job_tasks_processing_idx ON job_tasks (worker_id) WHERE status = 'processing';
ANALYZE job_tasks;
"""

DOWNGRADE = """
DROP INDEX job_tasks_processing_idx;
DROP SEQUENCE job_worker_ids;
COMMENT ON COLUMN job_tasks.attempts IS NULL;
ALTER TABLE job_tasks DROP COLUMN worker_id, DROP COLUMN failures;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
