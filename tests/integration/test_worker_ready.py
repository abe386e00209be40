"""A worker says "worker ready" only once it can embed and chunk at once: the model is loaded, and so is
the splitter's tokenizers (tiktoken for sizes, NLTK's sentence tokenizer for a paragraph longer than a
chunk: ~1 s that the first documents used to wait for; tests/unit/test_chunking.py checks the warm-up).
Then what it loaded leaves the garbage collector's full walks (infra/heap.py)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.ingest import wait_for
from tests.support.processes import process_env, start_worker


def test_a_ready_worker_has_loaded_what_chunking_needs(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    # A fresh database: no task has reached this worker, so only its warm-up can have loaded them.
    worker = start_worker(process_env(database_url, data_dir), tmp_path / "worker.log")
    try:
        wait_for(lambda: "worker ready" in worker.log(), timeout=120, what="worker ready")
        # The worker's parsing child (ingestion/parse_process.py) chunks; it is ready before the worker.
        found = re.search(r"parser process (\d+) ready", worker.log())
        assert found, worker.log()
        mapped = Path(f"/proc/{found.group(1)}/maps").read_text()
        assert "/tiktoken/" in mapped, "the splitter's tokenizer is not loaded yet"
        # NLTK's optional SciPy and scikit-learn stay out (~1.9 s of CPU and ~90 MB a child).
        assert "/scipy/" not in mapped and "/sklearn/" not in mapped
        # Its start-up heap (the model, LlamaIndex, NLTK) is then out of the collector's full walks.
        log = worker.log()
        assert "start-up heap frozen" in log.split("worker ready")[0]
    finally:
        worker.stop()
