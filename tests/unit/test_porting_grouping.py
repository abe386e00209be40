"""How records of another vector store become documents, and when their vectors are reused."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag_server.porting.chroma import ChromaSource
from rag_server.porting.grouping import GroupPlan, build_document, display_name, group_key
from rag_server.porting.models import PortingError, SourceRecord, same_model, vector_plan
from rag_server.porting.writer import document_id


def test_the_first_document_key_a_record_has_groups_it() -> None:
    assert group_key("n1", {"ref_doc_id": "doc-a", "source": "a.pdf"}, None) == "doc-a"
    assert group_key("n1", {"source": "/data/a.pdf"}, None) == "/data/a.pdf"
    # LlamaIndex writes the string "None" for a node without a source document.
    assert group_key("n1", {"ref_doc_id": "None", "doc_id": "None"}, None) == "n1"
    assert group_key("n1", {"lang": "en"}, None) == "n1"
    assert group_key("n1", {"source": "a.pdf", "book": "b"}, "book") == "b"
    assert group_key("n1", {"source": "a.pdf"}, "none") == "n1"


def test_chunks_keep_source_order_unless_every_record_has_a_start_index() -> None:
    plan = plan_groups(
        [
            ("a2", {"source": "a", "start_index": 200}),
            ("b1", {"source": "b"}),
            ("a1", {"source": "a", "start_index": 0}),
            ("b0", {"source": "b"}),
        ],
        None,
    )
    assert plan.records == 4
    assert plan.groups() == [("a", ["a1", "a2"]), ("b", ["b1", "b0"])]
    mixed = plan_groups([("x2", {"source": "x", "start_index": 5}), ("x1", {"source": "x"})], None)
    assert mixed.groups() == [("x", ["x2", "x1"])]


def test_shared_metadata_goes_on_the_document_the_rest_on_chunks() -> None:
    records = [
        SourceRecord("r1", "first", {"source": "/d/report.pdf", "page": 1, "_node_content": "{}"}, None),
        SourceRecord("r2", "  ", {"source": "/d/report.pdf", "page": 1}, None),  # no text: dropped
        SourceRecord("r3", "second", {"source": "/d/report.pdf", "page": 2}, np.ones(3, dtype=np.float32)),
    ]
    doc = build_document("/d/report.pdf", records)
    assert doc is not None
    assert doc.filename == "report.pdf.txt"  # its stored bytes are the chunk texts
    assert doc.metadata == {"source": "/d/report.pdf"}
    assert [c.text for c in doc.chunks] == ["first", "second"]
    assert [c.metadata for c in doc.chunks] == [
        {"page": 1, "source_id": "r1"},
        {"page": 2, "source_id": "r3"},
    ]
    assert [c.page for c in doc.chunks] == [None, None]  # `page`: 0- or 1-based, depending on who wrote it
    assert build_document("k", [SourceRecord("r", "", {}, None)]) is None
    assert display_name("notes/today.md", {}) == "today.md"


def test_a_page_the_loader_numbered_from_one_becomes_the_chunks_page() -> None:
    metadatas: list[dict[str, Any]] = [
        {"page_label": "3", "page": 2},  # LangChain's PyPDFLoader: both
        {"page_label": "iv"},  # a front-matter label is not a page number
        {"page_label": " 12 "},  # LlamaIndex's PDF reader: a string
        {"page_number": 5},  # Unstructured
        {"page_number": 0},
        {"page_number": True},
        {"page_label": "99999999999"},  # past the column's integer
        {"page_label": "\u0663"},  # a digit, but not one int() should read as a page here
    ]
    records = [
        SourceRecord(f"r{i}", f"text {i}", {"source": "a.pdf", **m}, None) for i, m in enumerate(metadatas)
    ]
    doc = build_document("a.pdf", records)
    assert doc is not None
    assert [c.page for c in doc.chunks] == [3, None, 12, 5, None, None, None, None]
    assert doc.chunks[0].metadata["page_label"] == "3"  # the source's metadata is kept as it was


def test_vectors_are_reused_only_for_the_same_model_and_dimension() -> None:
    model = "sentence-transformers/all-MiniLM-L6-v2"
    assert same_model("all-minilm-l6-v2", model)
    assert not same_model("text-embedding-3-small", model)
    assert vector_plan("all-MiniLM-L6-v2", 384, model, 384).reuse
    assert not vector_plan(None, 384, model, 384).reuse
    assert not vector_plan(model, 768, model, 384).reuse
    assert not vector_plan("text-embedding-3-small", 384, model, 384).reuse
    assert not vector_plan(model, None, model, 384).reuse


def test_document_ids_are_deterministic_per_collection_and_origin() -> None:
    from uuid import uuid4

    a, b = uuid4(), uuid4()
    assert document_id(a, "chroma:notes", "x.txt") == document_id(a, "chroma:notes", "x.txt")
    assert document_id(a, "chroma:notes", "x.txt") != document_id(b, "chroma:notes", "x.txt")
    assert document_id(a, "chroma:notes", "x.txt") != document_id(a, "chroma:other", "x.txt")


def test_without_chromadb_the_chroma_import_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "chromadb", None)  # `import chromadb` now raises ImportError
    # Not `pip install 'rag-server[chroma]'`: PyPI's rag-server is an unrelated project.
    with pytest.raises(PortingError, match=r"\.venv/bin/pip install -e '\.\[chroma\]'") as refused:
        ChromaSource(tmp_path, None)
    assert "rag-server[" not in str(refused.value)


def plan_groups(scanned: list[tuple[str, dict[str, Any]]], group_by: str | None) -> GroupPlan:
    """What import_source does with a source's scan (porting/importer.py)."""
    plan = GroupPlan()
    for record_id, metadata in scanned:
        plan.add(record_id, metadata, group_by)
    return plan
