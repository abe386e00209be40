"""BEIR-format datasets: corpus.jsonl, queries.jsonl and qrels/<split>.tsv.

Every format problem is reported with the file and the 1-based line number, because these files
are large and hand-edited copies are common.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BeirFormatError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the line."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class BeirDocument:
    doc_id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        # BEIR convention: the document is title + text.
        return f"{self.title} {self.text}".strip()


@dataclass(frozen=True)
class BeirDataset:
    root: Path
    corpus: dict[str, BeirDocument]
    queries: dict[str, str]
    # query id -> {doc id -> grade}; only grades > 0 count as relevant when scoring.
    qrels: dict[str, dict[str, int]]

    @property
    def name(self) -> str:
        return self.root.name

    def test_query_ids(self) -> list[str]:
        """Queries that have a judgement and a text, in qrels order (stable across runs)."""
        return [qid for qid in self.qrels if qid in self.queries]


def load_beir(root: Path | str, split: str = "test") -> BeirDataset:
    root = Path(root)
    if not root.is_dir():
        raise BeirFormatError(root, "dataset directory not found")
    corpus_path = root / "corpus.jsonl"
    corpus = {
        doc_id: BeirDocument(
            doc_id,
            _str_field(obj, "title", corpus_path, n, required=False),
            _str_field(obj, "text", corpus_path, n),
        )
        for n, doc_id, obj in _read_jsonl(corpus_path)
    }
    queries_path = root / "queries.jsonl"
    queries = {qid: _str_field(obj, "text", queries_path, n) for n, qid, obj in _read_jsonl(queries_path)}
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    unknown = sorted({d for judged in qrels.values() for d in judged} - corpus.keys())
    if unknown:
        # Scoring against documents we never indexed would silently cap recall; say so.
        raise BeirFormatError(
            root / "qrels" / f"{split}.tsv",
            f"{len(unknown)} judged document ids are not in corpus.jsonl, e.g. {unknown[0]!r}",
        )
    return BeirDataset(root=root, corpus=corpus, queries=queries, qrels=qrels)


def _read_jsonl(path: Path) -> list[tuple[int, str, dict[str, Any]]]:
    if not path.is_file():
        raise BeirFormatError(path, "file not found")
    rows: list[tuple[int, str, dict[str, Any]]] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BeirFormatError(path, f"invalid JSON ({exc.msg})", n) from None
            if not isinstance(obj, dict):
                raise BeirFormatError(path, "expected a JSON object", n)
            raw_id = obj.get("_id")
            if not isinstance(raw_id, str | int) or isinstance(raw_id, bool) or str(raw_id) == "":
                raise BeirFormatError(path, "missing or invalid '_id'", n)
            doc_id = str(raw_id)
            if doc_id in seen:
                raise BeirFormatError(path, f"duplicate _id {doc_id!r}", n)
            seen.add(doc_id)
            rows.append((n, doc_id, obj))
    if not rows:
        raise BeirFormatError(path, "file is empty")
    return rows


def _str_field(obj: dict[str, Any], key: str, path: Path, line: int, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise BeirFormatError(path, f"field {key!r} must be a string", line)
    return value


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query-id <TAB> corpus-id <TAB> score, with a header line; CRLF or LF."""
    if not path.is_file():
        raise BeirFormatError(path, "file not found")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for n, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if n == 1 and fields[0].strip().lower() in {"query-id", "query_id", "qid"}:
                continue
            if len(fields) != 3:
                raise BeirFormatError(path, f"expected 3 tab-separated fields, got {len(fields)}", n)
            qid, doc_id, score = (f.strip() for f in fields)
            if not qid or not doc_id:
                raise BeirFormatError(path, "empty query-id or corpus-id", n)
            try:
                grade = int(score)
            except ValueError:
                raise BeirFormatError(path, f"score {score!r} is not an integer", n) from None
            qrels.setdefault(qid, {})[doc_id] = grade
    if not qrels:
        raise BeirFormatError(path, "no relevance judgements")
    return qrels


def corpus_fingerprint(root: Path) -> str:
    """sha256 of corpus.jsonl: decides whether an ingested eval database matches this corpus."""
    digest = hashlib.sha256()
    with (root / "corpus.jsonl").open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
