"""The pure policies behind crash recovery: the supervisor's restart backoff, and when a task that
keeps coming back fails for good (failures it caused vs deliveries lost to dead workers)."""

from __future__ import annotations

from rag_server.config import Settings
from rag_server.ingestion.retry_policy import give_up_reason, retry_delay_s
from rag_server.stack import RestartBackoff


def test_backoff_doubles_while_the_worker_keeps_crashing_and_is_capped() -> None:
    backoff = RestartBackoff(initial_s=1, max_s=30, reset_after_s=60)
    assert [backoff.delay_after(0.5) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_backoff_resets_after_a_worker_ran_well() -> None:
    backoff = RestartBackoff(initial_s=1, max_s=30, reset_after_s=60)
    for _ in range(6):
        backoff.delay_after(1)
    assert backoff.delay_after(1) == 30
    # A healthy run of a minute or more: the next crash restarts after the initial delay again...
    assert backoff.delay_after(60) == 1
    # ...and a crash loop after it grows again from there.
    assert [backoff.delay_after(2) for _ in range(3)] == [2, 4, 8]


def test_backoff_does_not_reset_after_a_short_run() -> None:
    backoff = RestartBackoff(initial_s=1, max_s=30, reset_after_s=60)
    assert [backoff.delay_after(59.9) for _ in range(4)] == [1, 2, 4, 8]


def settings(**kw: object) -> Settings:
    return Settings.model_validate({"worker_max_attempts": 3, "worker_max_deliveries": 10, **kw})


def test_worker_deaths_do_not_use_up_the_attempts() -> None:
    # Delivered 10 times (9 workers died on it), never failed: processed again.
    assert give_up_reason(settings(), failures=0, deliveries=10, last_error=None) is None
    assert give_up_reason(settings(), failures=2, deliveries=10, last_error="boom") is None


def test_a_document_that_keeps_failing_fails_with_its_last_error() -> None:
    reason = give_up_reason(settings(), failures=3, deliveries=4, last_error="The parser crashed.")
    assert reason == "Gave up after 3 attempts: The parser crashed."


def test_the_poison_pill_guard_counts_deliveries() -> None:
    reason = give_up_reason(settings(), failures=1, deliveries=11, last_error="boom")
    assert reason is not None
    assert reason.startswith("Gave up after 10 deliveries: workers died or were stopped while processing")
    assert "9 times" in reason and reason.endswith("Its last error: boom")


def test_failures_win_over_deliveries() -> None:
    reason = give_up_reason(settings(), failures=3, deliveries=50, last_error="bad")
    assert reason is not None and reason.startswith("Gave up after 3 attempts")


def test_retry_delay_grows_with_failures() -> None:
    s = settings(worker_retry_backoff_s=5)
    assert [retry_delay_s(s, n) for n in (1, 2, 3, 10)] == [5, 10, 20, 300]
