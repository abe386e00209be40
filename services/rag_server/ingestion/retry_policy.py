"""When a failed task is tried again, and when it fails for good (the two counters: worker.py's docstring)."""

from __future__ import annotations

from rag_server.config import Settings


def retry_delay_s(settings: Settings, failures: int) -> int:
    return int(min(300.0, settings.worker_retry_backoff_s * 2 ** max(0, failures - 1)))


# The reasons of a task handed back for a cause that is not its document's (worker.py, count_failure=False).
HANDED_BACK = ("The database was unavailable", "The worker could not read files")


def give_up_reason(settings: Settings, failures: int, deliveries: int, last_error: str | None) -> str | None:
    """Why a task delivered for the `deliveries`-th time must fail now, or None to process it."""
    if failures >= settings.worker_max_attempts:
        return f"Gave up after {failures} attempts: {last_error or 'processing it kept failing.'}"
    if deliveries > settings.worker_max_deliveries:
        if last_error and last_error.startswith(HANDED_BACK):
            # Handed back in order each time (the database unavailable, its disk full): no worker died.
            return f"Gave up after {deliveries - 1} deliveries: {last_error}"
        stopped = deliveries - 1 - failures
        return (
            f"Gave up after {deliveries - 1} deliveries: workers died or were stopped while processing "
            f"this document {stopped} times (killed, out of memory, or crashed by it)."
            + (f" Its last error: {last_error}" if last_error else "")
        )
    return None
