"""Indexes for the figures read on every /metrics scrape and GET /status, whatever job_tasks' size.

`job_tasks_active_idx`: tasks still queued or processing (GET /status and /metrics count them); a small
partial index, since finished tasks pile up for ever. `job_tasks_finished_idx`: tasks completed
recently (the workers' throughput over the last minute).

Revision ID: 0008_active_task_index
Revises: 0007_task_failures_and_workers
"""

from __future__ import annotations

from rag_server.infra.migrations.helpers import execute_sql

revision = "0008_active_task_index"
down_revision = "0007_task_failures_and_workers"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE INDEX job_tasks_active_idx ON job_tasks (status) WHERE status IN ('queued', 'processing');
CREATE INDEX job_tasks_finished_idx ON job_tasks (finished_at) WHERE status = 'completed';
ANALYZE job_tasks;
"""

DOWNGRADE = """
DROP INDEX job_tasks_finished_idx;
DROP INDEX job_tasks_active_idx;
"""


def upgrade() -> None:
    execute_sql(UPGRADE)


def downgrade() -> None:
    execute_sql(DOWNGRADE)
