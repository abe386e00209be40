"""A module's own embedded cluster that also listens on TCP (RAG_EMBEDDED_LISTEN's path), for tests that
stop, pause or reach it the way another host would, without touching the session's cluster."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rag_server.infra.embedded_postgres import EmbeddedPostgres, ensure_embedded_postgres
from tests.support.processes import free_port


@contextmanager
def tcp_cluster(prefix: str) -> Iterator[EmbeddedPostgres]:
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    cluster = ensure_embedded_postgres(root / "pg", f"127.0.0.1:{free_port()}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
