"""Do heading paths help retrieval? A structured, section-labelled set built offline from the Markdown on
this machine (the project's docs, and the README of every installed package that ships one), searched
with and without the heading path in each chunk's indexed/embedded text.

    python -m rag_server.evaluation.heading_study build --out /tmp/headings
    python -m rag_server.evaluation.heading_study run --data /tmp/headings --json reports/headings.json

`build` writes a BEIR-shaped directory (corpus.jsonl: one entry per section, with its `file` and
`heading_path`; queries.jsonl; qrels/test.tsv) and the Markdown files under files/. Two query sets:
- `heading`: the section's heading path as words ("HTTPX Installation"): what a reader who knows the
  structure asks; the words are often absent from most of the section's chunks;
- `content`: a sentence of the section's own body: the control, where headings should not hurt.
`run` ingests the files twice, into two collections of one database (RAG_CHUNK_INCLUDE_HEADINGS on
and off; the title is in both), and scores each hit's section (filename + heading path) with the eval's
metrics. Not a benchmark of the world: queries are generated from the same headings, so the heading set
measures how well a section can be found by its place in the document, by construction.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import email
import hashlib
import json
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag_server.config import Settings
from rag_server.evaluation.metrics import evaluate
from rag_server.ingestion.parsing import HEADING_SEPARATOR
from rag_server.ingestion.parsing.text import markdown_sections

MAX_FILE_BYTES = 40_000
QUERIES_PER_SET = 150
_WORDS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_HEADING_LINE = re.compile(r"^ {0,3}#{1,6}\s")


def markdown_sources(repo: Path, site_packages: Path) -> Iterator[tuple[str, str]]:
    """(file name, Markdown) of the project's docs and of installed packages' Markdown READMEs."""
    for path in sorted([repo / "README.md", *(repo / "docs").rglob("*.md")]):
        if path.is_file():
            yield f"project-{path.stem}.md", path.read_text(encoding="utf-8", errors="replace")
    for meta in sorted(site_packages.glob("*.dist-info/METADATA")):
        message = email.message_from_string(meta.read_text(encoding="utf-8", errors="replace"))
        if "markdown" not in (message.get("Description-Content-Type") or ""):
            continue
        body = message.get_payload()
        if isinstance(body, str) and body.strip():
            yield f"pkg-{meta.parent.name.split('-')[0].lower()}.md", body


def _content_sentence(text: str, rng: random.Random) -> str | None:
    """A sentence of 8-25 words from the section's prose (no heading, code or table lines)."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced and not _HEADING_LINE.match(line) and not line.lstrip().startswith(("|", "<", "!")):
            lines.append(line)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(lines)) if 8 <= len(_WORDS.findall(s)) <= 25]
    return " ".join(_WORDS.findall(rng.choice(sentences))) if sentences else None


def build(out: Path, repo: Path, site_packages: Path) -> dict[str, int]:
    """Write the dataset; returns its counts."""
    rng = random.Random(15)
    files_dir = out / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    corpus, heading_queries, content_queries = [], [], []
    for name, text in markdown_sources(repo, site_packages):
        if len(text.encode()) > MAX_FILE_BYTES:
            continue
        sections = [s for s in markdown_sections(text) if s.heading_path]
        if len({s.heading_path for s in sections}) < 3:
            continue  # not structured enough to say anything about headings
        (files_dir / name).write_text(text, encoding="utf-8")
        for i, section in enumerate(sections):
            sid = f"{name}#{i}"
            path = HEADING_SEPARATOR.join(section.heading_path)
            corpus.append(
                {"_id": sid, "title": name, "text": section.text, "file": name, "heading_path": path}
            )
            words = _WORDS.findall(" ".join(section.heading_path))
            # Version and date headings (changelogs) name nothing a reader would ask for.
            if len(words) >= 2 and not re.search(r"\d", path):
                heading_queries.append((sid, " ".join(words)))
            sentence = _content_sentence(section.text, rng)
            if sentence:
                content_queries.append((sid, sentence))
    queries = []
    for kind, pool in (("heading", heading_queries), ("content", content_queries)):
        picked = rng.sample(pool, min(QUERIES_PER_SET, len(pool)))
        queries += [
            {"_id": f"{kind}-{n}", "text": text, "kind": kind, "section": sid}
            for n, (sid, text) in enumerate(picked)
        ]
    _write_jsonl(out / "corpus.jsonl", corpus)
    _write_jsonl(out / "queries.jsonl", queries)
    (out / "qrels").mkdir(exist_ok=True)
    qrels = "".join(f"{q['_id']}\t{q['section']}\t1\n" for q in queries)
    (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels, encoding="utf-8")
    return {"files": len(list(files_dir.iterdir())), "sections": len(corpus), "queries": len(queries)}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _judgements(data: Path) -> tuple[dict[str, str], dict[tuple[str, str], str], list[dict[str, Any]]]:
    """Section id by query; section id by (file, heading path); the queries."""
    corpus = _read_jsonl(data / "corpus.jsonl")
    queries = _read_jsonl(data / "queries.jsonl")
    by_place: dict[tuple[str, str], str] = {}
    for row in corpus:
        by_place.setdefault((row["file"], row["heading_path"]), row["_id"])
    # Two sections with one path in one file are one place to a reader: judge the first.
    same = {row["_id"]: by_place[(row["file"], row["heading_path"])] for row in corpus}
    return {q["_id"]: same[q["section"]] for q in queries}, by_place, queries


async def run(settings: Settings, data: Path, modes: list[str]) -> dict[str, Any]:
    from rag_server.infra.database import resolve_database_url, with_database
    from rag_server.infra.runtime import open_runtime

    target, by_place, queries = _judgements(data)
    files = sorted((data / "files").iterdir())
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]
    name = f"headings_{digest}"
    server_url = await asyncio.to_thread(resolve_database_url, settings)
    reused = await _prepare(server_url, name)
    study_settings = settings.model_copy(update={"database_url": with_database(server_url, name)})
    results: dict[str, Any] = {"files": len(files), "queries": {}, "database": name, "reused": reused}
    async with open_runtime(study_settings, migrate=True, load_embedder="queries") as runtime:
        for headings in (True, False):
            collection = "headings_on" if headings else "headings_off"
            if not reused:
                await _ingest(runtime, files, collection, headings)
            for mode in modes:
                for kind in ("heading", "content"):
                    picked = [q for q in queries if q["kind"] == kind]
                    run_ = {
                        q["_id"]: await _ranking(runtime, q["text"], mode, collection, by_place)
                        for q in picked
                    }
                    qrels = {q["_id"]: {target[q["_id"]]: 1} for q in picked}
                    results["queries"][kind] = len(picked)
                    results.setdefault(collection, {}).setdefault(mode, {})[kind] = evaluate(run_, qrels)
        results["chunks"] = int(await runtime.pool.fetchval("SELECT count(*) FROM chunks"))
    return results


async def _prepare(server_url: str, name: str) -> bool:
    from rag_server.infra import admin

    async def complete(conn: Any) -> bool:
        return await admin.has_app_meta(conn) and await admin.get_meta(conn, "heading_study") == "done"

    return await admin.reuse_or_recreate(server_url, name, complete)


async def _ingest(runtime: Any, files: list[Path], collection: str, headings: bool) -> None:
    from rag_server.collections.models import CreateCollection
    from rag_server.collections.store import create_collection
    from rag_server.infra import admin
    from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct

    target = await create_collection(runtime.pool, CreateCollection(name=collection))
    chunking = runtime.settings.model_copy(update={"chunk_include_headings": headings})
    documents = [DirectDocument(f.name, f.read_bytes(), {}) for f in files]
    await ingest_documents_direct(
        dataclasses.replace(runtime, settings=chunking), documents, collection_id=target.id
    )
    if not headings:  # the second of the two: the database is complete
        await admin.set_meta(runtime.pool, "heading_study", "done")


async def _ranking(
    runtime: Any, text: str, mode: str, collection: str, by_place: dict[tuple[str, str], str]
) -> list[str]:
    from rag_server.retrieval.models import SearchRequest
    from rag_server.retrieval.service import search

    request = SearchRequest(query=text, top_k=20, search_type=mode, collections=[collection])  # type: ignore[arg-type]
    response = await search(runtime, request)
    # A chunk outside any judged section (a preamble, a code-only section) still takes its rank.
    return [
        by_place.get((h.document_name, h.heading_path or ""), f"other:{h.chunk_id}") for h in response.results
    ]


def table(results: dict[str, Any]) -> str:
    lines = ["| mode | queries | headings | nDCG@10 | Recall@10 | MRR@10 |", "|---|---|---|---|---|---|"]
    for mode in results["headings_on"]:
        for kind in ("heading", "content"):
            for collection, label in (("headings_off", "off"), ("headings_on", "on")):
                m = results[collection][mode][kind]
                lines.append(
                    f"| {mode} | {kind} ({results['queries'][kind]}) | {label} | {m['ndcg@10']:.3f} "
                    f"| {m['recall@10']:.3f} | {m['mrr@10']:.3f} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="heading_study", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--repo", type=Path, default=Path.cwd())
    b.add_argument(
        "--site-packages", type=Path, default=Path(next(p for p in sys.path if p.endswith("site-packages")))
    )
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--modes", default="bm25,vector,hybrid")
    r.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.command == "build":
        print(json.dumps(build(args.out, args.repo, args.site_packages)))
        return 0
    results = asyncio.run(run(Settings(), args.data, args.modes.split(",")))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
