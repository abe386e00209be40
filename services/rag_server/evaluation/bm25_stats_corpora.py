"""The collections of the BM25 statistics study (docs/decisions/0009-bm25-statistics.md) and how a
setup is stored: one database per setup, chunked exactly as `rag-server eval` chunks.

Only one BEIR dataset is on the machine (SciFact) and no package ships a second one with queries and
judgements, so the study builds its setups from SciFact plus text every machine has:
- a different-domain collection without judgements: docstrings of Python's standard library, read with
  `ast` (nothing is imported), sampled in a hash order so the choice does not depend on file order;
- deterministic splits of SciFact into collections (by a hash of the document id), each evaluated on the
  test queries whose relevant documents all fall in it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sysconfig
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag_server.config import Settings
from rag_server.evaluation.beir import BeirDataset, BeirDocument
from rag_server.evaluation.progress import progress_bar
from rag_server.evaluation.runner import STORED_CHUNK_SETTINGS, beir_direct_document, pick_settings
from rag_server.infra import admin
from rag_server.infra.runtime import Runtime

STUDY_FORMAT = 1  # bump when the way setups are stored changes: older study databases are rebuilt
MARKER = "bm25_stats_study"  # app_meta key, written after the last collection is stored
INGEST_BATCH = 256  # documents per ingest call
# Docstrings shorter than this say little ("Return self."): too unlike a passage to stand for one.
MIN_DOCSTRING_WORDS = 12
# Parts of the standard library that are tests, tools or vendored copies rather than its documentation.
SKIPPED_STDLIB_PARTS = {"site-packages", "test", "tests", "idle_test", "lib2to3", "ensurepip", "turtledemo"}


@dataclass(frozen=True)
class StudyCollection:
    """One collection of a setup: its documents and the test queries scored inside it (may be none)."""

    name: str
    documents: list[BeirDocument]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Setup:
    """Collections that share one database, hence one set of global statistics."""

    name: str
    description: str
    collections: list[StudyCollection]


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _definitions(tree: ast.Module, module: str) -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of the module and every class and function in it, nested ones too."""
    yield module, tree
    stack: list[tuple[str, ast.AST]] = [(module, tree)]
    while stack:
        prefix, node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}.{child.name}"
                yield name, child
                stack.append((name, child))


def stdlib_docstrings(limit: int, root: Path | None = None) -> list[BeirDocument]:
    """Up to `limit` docstrings of the standard library (title: the qualified name), a hash sample."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, BeirDocument] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if SKIPPED_STDLIB_PARTS.intersection(parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue  # templates and files for other Python versions
        module = ".".join(parts).removesuffix(".__init__")
        for name, node in _definitions(tree, module):
            assert isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            doc = ast.get_docstring(node)
            if doc and len(doc.split()) >= MIN_DOCSTRING_WORDS and name not in found:
                found[name] = BeirDocument(doc_id=name, title=name, text=doc)
    return sorted(found.values(), key=lambda d: _hash_int(d.doc_id))[:limit]


def queries_inside(qrels: Mapping[str, Mapping[str, int]], members: set[str]) -> dict[str, dict[str, int]]:
    """The queries whose relevant documents (grade > 0) are all in `members`."""
    inside: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        relevant = {doc for doc, grade in judged.items() if grade > 0}
        if relevant and relevant <= members:
            inside[qid] = dict(judged)
    return inside


def split(dataset: BeirDataset, name: str, parts: int) -> list[StudyCollection]:
    """The corpus in `parts` collections by a hash of the document id, each with its own queries."""
    buckets: list[list[BeirDocument]] = [[] for _ in range(parts)]
    for doc in dataset.corpus.values():
        buckets[_hash_int(doc.doc_id) % parts].append(doc)
    qrels = {qid: dataset.qrels[qid] for qid in dataset.test_query_ids()}
    return [
        StudyCollection(f"{name}-{i}", docs, queries_inside(qrels, {d.doc_id for d in docs}))
        for i, docs in enumerate(buckets)
    ]


def build_setups(dataset: BeirDataset, other_size: int | None = None) -> list[Setup]:
    """The dataset next to another domain; in halves; a tenth next to the other nine; that tenth next
    to another domain."""
    qrels = {qid: dataset.qrels[qid] for qid in dataset.test_query_ids()}
    other = stdlib_docstrings(other_size if other_size is not None else len(dataset.corpus))
    halves = split(dataset, "halves", 2)
    tenths = split(dataset, "tenths", 10)
    rest = [doc for part in tenths[1:] for doc in part.documents]
    small = tenths[0]
    large = StudyCollection("tenths-rest", rest, queries_inside(qrels, {d.doc_id for d in rest}))
    return [
        Setup(
            "mixed",
            f"{dataset.name} (all test queries) + Python stdlib docstrings (no queries) in one database",
            [
                StudyCollection(dataset.name, list(dataset.corpus.values()), qrels),
                StudyCollection("stdlib-docs", other),
            ],
        ),
        Setup("halves", f"{dataset.name} split in two halves by document-id hash", halves),
        Setup(
            "tenth", f"{dataset.name}: a tenth by document-id hash and the other nine tenths", [small, large]
        ),
        Setup(
            "tenth-mixed",
            f"the tenth of {dataset.name} + the stdlib docstrings",
            [small, StudyCollection("stdlib-docs", other)],
        ),
    ]


class ZeroEmbedder:
    """BM25 reads only text: every chunk gets the zero vector, so no model is loaded."""

    model_name = "zero-vectors (BM25-only study)"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    async def embed(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), self.dim), dtype=np.float32)

    async def embed_query(self, query: str) -> np.ndarray:
        return np.zeros(self.dim, dtype=np.float32)

    async def aclose(self) -> None:
        return None


@dataclass
class StoredSetup:
    """A setup's chunks as stored: id -> (collection name, search text), and the BEIR ids per document."""

    chunks: dict[int, tuple[str, str]] = field(default_factory=dict)
    documents: dict[int, list[str]] = field(default_factory=dict)  # chunk id -> BEIR ids of its document


def database_name(setup: Setup, settings: Settings) -> str:
    """bm25stats_<hash12> of the setup's collections and contents and the chunk settings."""
    digest = hashlib.sha256()
    key = {"format": STUDY_FORMAT, "setup": setup.name, **pick_settings(settings, STORED_CHUNK_SETTINGS)}
    digest.update(json.dumps(key, sort_keys=True).encode())
    for collection in setup.collections:
        digest.update(collection.name.encode())
        for doc in collection.documents:
            digest.update(json.dumps([doc.doc_id, doc.title, doc.text]).encode())
    return f"bm25stats_{digest.hexdigest()[:12]}"


async def store_setup(runtime: Runtime, setup: Setup, quiet: bool) -> None:
    """Every collection of the setup, chunked like the eval; the marker last (then it is reused)."""
    from rag_server.collections.models import CreateCollection
    from rag_server.collections.store import create_collection
    from rag_server.ingestion.pipeline import ingest_documents_direct

    duplicates: dict[str, list[str]] = {}
    for collection in setup.collections:
        target = await create_collection(runtime.pool, CreateCollection(name=collection.name))
        docs = collection.documents
        with progress_bar(f"{setup.name}: storing {collection.name}", len(docs), quiet) as bar:
            for start in range(0, len(docs), INGEST_BATCH):
                batch = docs[start : start + INGEST_BATCH]
                ids = await ingest_documents_direct(
                    runtime, [beir_direct_document(d) for d in batch], collection_id=target.id
                )
                for doc, stored in zip(batch, ids, strict=True):
                    duplicates.setdefault(str(stored), []).append(doc.doc_id)
                bar.update(len(batch))
    duplicates = {stored: ids for stored, ids in duplicates.items() if len(ids) > 1}
    await admin.set_meta(runtime.pool, MARKER, {"duplicates": duplicates, "finished_at": time.time()})


async def read_setup(runtime: Runtime) -> StoredSetup:
    """Every chunk of the setup's database with its collection and its document's BEIR ids."""
    rows = await runtime.pool.fetch(
        """
        SELECT c.id, col.name AS collection, c.search_text, d.id AS document_id,
               d.metadata->>'beir_id' AS beir_id
        FROM chunks c
        JOIN collections col ON col.id = c.collection_id
        JOIN documents d ON d.id = c.document_id
        ORDER BY c.id
        """
    )
    marker = await admin.get_meta(runtime.pool, MARKER)
    duplicates: dict[str, list[str]] = marker.get("duplicates", {}) if isinstance(marker, dict) else {}
    stored = StoredSetup()
    for r in rows:
        stored.chunks[r["id"]] = (r["collection"], r["search_text"])
        stored.documents[r["id"]] = duplicates.get(str(r["document_id"]), [r["beir_id"]])
    return stored
