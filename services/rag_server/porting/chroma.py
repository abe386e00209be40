"""Read a Chroma persistent directory with the `chromadb` package (the optional extra `chroma`).

Chroma records are chunks: id, document (the text), metadata, embedding. Chroma does not record which
model made the vectors, but a collection's configuration names its embedding function; its `default`
is all-MiniLM-L6-v2. Nothing here ever calls that function (it would download a model).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_server.paths import input_folder_problem
from rag_server.porting.models import PortingError, SourceRecord

PAGE = 1000
# Chroma's `default` embedding function: all-MiniLM-L6-v2 on ONNX Runtime.
CHROMA_DEFAULT_MODEL = "all-MiniLM-L6-v2"
# What `import chroma` reads, in the messages that name it.
CHROMA_FOLDER = "the folder of a Chroma PersistentClient (it holds chroma.sqlite3)"


def _client(path: Path) -> Any:
    try:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
    except ImportError:
        raise PortingError(
            # Not `pip install 'rag-server[chroma]'`: PyPI's rag-server is an unrelated project.
            "reading Chroma needs the chromadb package: .venv/bin/pip install -e '.[chroma]' in the "
            "project's folder (or pip install 'chromadb>=1.5,<2' into the environment rag-server runs in)"
        ) from None
    if problem := input_folder_problem(path, CHROMA_FOLDER):
        raise PortingError(problem)
    if not (path / "chroma.sqlite3").is_file():
        # PersistentClient would create an empty store there; say what is missing instead.
        raise PortingError(f"{path} holds no Chroma data (no chroma.sqlite3 in it)")
    try:
        return chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    except Exception as exc:  # chromadb's own errors (a newer or damaged store) have no common base
        raise PortingError(f"chromadb {chromadb.__version__} cannot open {path}: {exc}") from None


def _model_of(collection: Any) -> str | None:
    """The model the collection's embedding function names (configuration, else metadata), if any."""
    config = getattr(collection, "configuration_json", None) or {}
    function = config.get("embedding_function") if isinstance(config, dict) else None
    if isinstance(function, dict):
        if function.get("name") == "default":
            return CHROMA_DEFAULT_MODEL
        settings = function.get("config") or {}
        for key in ("model_name", "model", "model_id"):
            if isinstance(settings.get(key), str):
                return str(settings[key])
    metadata = collection.metadata or {}
    for key in ("embedding_model", "model_name", "model"):
        if isinstance(metadata.get(key), str):
            return str(metadata[key])
    return None


class ChromaSource:
    """One collection of a Chroma directory (by name; the only one when the directory holds one)."""

    def __init__(self, path: Path, collection: str | None) -> None:
        self._client = _client(path)
        names = sorted(c if isinstance(c, str) else c.name for c in self._client.list_collections())
        if collection is None:
            if len(names) != 1:
                listed = ", ".join(names) or "none"
                raise PortingError(
                    f"{path} holds {len(names)} collections ({listed}): choose one with --chroma-collection"
                )
            collection = names[0]
        if collection not in names:
            raise PortingError(
                f"no Chroma collection {collection!r} in {path}; it holds: {', '.join(names) or 'none'}"
            )
        self._collection = self._client.get_collection(collection)
        self.name = collection
        self.origin = f"chroma:{collection}"
        self.identity: str | None = f"chroma:{self._collection.id}"
        self.model = _model_of(self._collection)
        self.dim = self._dimension()

    def _dimension(self) -> int | None:
        first = self._collection.get(limit=1, include=["embeddings"])
        embeddings = first.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            return None
        return int(np.asarray(embeddings[0]).shape[0])

    def count(self) -> int:
        return int(self._collection.count())

    async def scan(self) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        offset = 0
        while True:
            page = await asyncio.to_thread(
                self._collection.get, limit=PAGE, offset=offset, include=["metadatas"]
            )
            ids = page["ids"]
            if not ids:
                return
            for record_id, metadata in zip(ids, page["metadatas"] or [None] * len(ids), strict=True):
                yield record_id, dict(metadata or {})
            offset += len(ids)

    async def fetch(self, ids: Sequence[str]) -> list[SourceRecord]:
        got = await asyncio.to_thread(
            self._collection.get, ids=list(ids), include=["documents", "metadatas", "embeddings"]
        )
        embeddings = got.get("embeddings")
        return [
            SourceRecord(
                id=record_id,
                text=text or "",
                metadata=dict(metadata or {}),
                embedding=None if embeddings is None else np.asarray(embeddings[i], dtype=np.float32),
            )
            for i, (record_id, text, metadata) in enumerate(
                zip(got["ids"], got["documents"], got["metadatas"], strict=True)
            )
        ]
