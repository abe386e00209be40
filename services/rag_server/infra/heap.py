"""The start-up heap, out of the cyclic garbage collector's way.

A full collection walks every object the collector tracks. Once the frameworks and the model are loaded
that is ~270,000 objects (~600,000 in `rag-server up`), and a full collection holds the event loop
(and every request on it) for ~200 ms: on the API server at 8 concurrent searches, 7 in a 40 s run,
202-255 ms each, which set the p99 of /search (reports/bench-search-gc.md). Objects made at start-up
live as long as the process, so walking them again frees nothing: they are moved to the permanent
generation (`gc.freeze`) once start-up is done, until the process stops serving. Reference counting
still frees them meanwhile.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


@contextmanager
def startup_heap_frozen() -> Iterator[int]:
    """Collect once, exempt every object alive now from later collections (yields how many), and give
    them back to the collector at the end (a test process starts and stops many apps)."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("start-up heap frozen: %d objects the collector will not walk again", frozen)
    try:
        yield frozen
    finally:
        gc.unfreeze()
