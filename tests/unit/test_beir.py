"""The BEIR loader: the real format (CRLF qrels with a header) and errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag_server.evaluation.beir import BeirFormatError, corpus_fingerprint, load_beir


def write_dataset(root: Path, *, qrels: str | None = None, corpus: str | None = None) -> Path:
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": "d1", "title": "Alpha", "text": "first"}, {"_id": 2, "title": "Beta", "text": "second"}]
    (root / "corpus.jsonl").write_text(
        corpus if corpus is not None else "".join(json.dumps(d) + "\n" for d in docs)
    )
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "alpha?"}\n{"_id": "q2", "text": "beta?"}\n')
    (root / "qrels" / "test.tsv").write_bytes(
        (qrels if qrels is not None else "query-id\tcorpus-id\tscore\r\nq1\td1\t2\r\nq2\t2\t1\r\n").encode()
    )
    return root


def test_loads_crlf_qrels_and_numeric_ids(tmp_path: Path) -> None:
    ds = load_beir(write_dataset(tmp_path))
    assert ds.corpus["2"].full_text == "Beta second"
    assert ds.qrels == {"q1": {"d1": 2}, "q2": {"2": 1}}
    assert ds.test_query_ids() == ["q1", "q2"]
    assert len(corpus_fingerprint(tmp_path)) == 64


def test_lf_qrels_without_header(tmp_path: Path) -> None:
    ds = load_beir(write_dataset(tmp_path, qrels="q1\td1\t1\n"))
    assert ds.qrels == {"q1": {"d1": 1}}


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    write_dataset(tmp_path, corpus='{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n')
    with pytest.raises(BeirFormatError) as err:
        load_beir(tmp_path)
    assert f"{tmp_path / 'corpus.jsonl'}:2" in str(err.value)


def test_missing_id_and_bad_score(tmp_path: Path) -> None:
    write_dataset(tmp_path, corpus='{"title": "x", "text": "y"}\n')
    with pytest.raises(BeirFormatError, match=r"corpus.jsonl:1: missing or invalid '_id'"):
        load_beir(tmp_path)


def test_bad_qrels_row(tmp_path: Path) -> None:
    write_dataset(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    with pytest.raises(BeirFormatError, match=r"test.tsv:2: score 'yes' is not an integer"):
        load_beir(tmp_path)
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1 d1 1\n")
    with pytest.raises(BeirFormatError, match=r"test.tsv:2: expected 3 tab-separated fields"):
        load_beir(tmp_path)


def test_missing_files(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    (tmp_path / "queries.jsonl").unlink()
    with pytest.raises(BeirFormatError, match=r"queries.jsonl: file not found"):
        load_beir(tmp_path)
    with pytest.raises(BeirFormatError, match="dataset directory not found"):
        load_beir(tmp_path / "nope")


def test_judged_document_missing_from_corpus(tmp_path: Path) -> None:
    write_dataset(tmp_path, qrels="q1\tmissing\t1\n")
    with pytest.raises(BeirFormatError, match=r"not in corpus\.jsonl"):
        load_beir(tmp_path)
