"""Chroma stores written by the real chromadb package, for the import tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_chroma(path: Path, rows: list[tuple[str, str, dict[str, Any]]], seed: int = 3) -> None:
    """A Chroma collection `notes` written by chromadb; 8-d vectors of no known model (re-embedded)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    client.create_collection("notes").add(
        ids=[r[0] for r in rows],
        documents=[r[1] for r in rows],
        metadatas=[r[2] for r in rows],
        embeddings=np.random.default_rng(seed).normal(size=(len(rows), 8)).tolist(),
    )


def update_chroma(path: Path, record_id: str, text: str) -> None:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    # With a vector: without one Chroma would call its embedding function (a model download).
    client.get_collection("notes").update(ids=[record_id], documents=[text], embeddings=[[0.5] * 8])
