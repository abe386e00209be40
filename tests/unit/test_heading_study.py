"""The heading-path study's dataset: BEIR-shaped, section-level judgements, from local Markdown only."""

from __future__ import annotations

import json
from pathlib import Path

from rag_server.evaluation.beir import load_beir
from rag_server.evaluation.heading_study import build

GUIDE = """# Atlas

Atlas draws maps of places you have never been to before today.

## Install

### Linux

Run the package manager with the atlas package name and wait a little while.

### Windows <a id="win"></a>

Download the installer and double-click it, then follow every step it shows.

## Release 1.2

Fixed the compass so it points somewhere more useful than before now.
"""


def test_build_writes_a_loadable_section_level_dataset(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "README.md").write_text(GUIDE)
    site = tmp_path / "site"
    meta = site / "tool-1.0.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tool\nDescription-Content-Type: text/markdown\n\n"
        + GUIDE.replace("Atlas", "Tool")
    )
    (site / "plain-1.0.dist-info").mkdir()
    (site / "plain-1.0.dist-info" / "METADATA").write_text("Name: plain\n\nNo markdown here.\n")
    counts = build(tmp_path / "out", repo, site)
    assert counts["files"] == 2
    dataset = load_beir(tmp_path / "out")
    paths = {
        d.doc_id: json.loads(line)["heading_path"]
        for d, line in zip(
            dataset.corpus.values(), (tmp_path / "out" / "corpus.jsonl").read_text().splitlines(), strict=True
        )
    }
    assert "Atlas > Install > Windows" in paths.values()  # inline HTML anchors are not words
    queries = {
        q["text"]: q for q in map(json.loads, (tmp_path / "out" / "queries.jsonl").read_text().splitlines())
    }
    assert "Atlas Install Linux" in queries and queries["Atlas Install Linux"]["kind"] == "heading"
    # A version heading makes no heading query; every query is judged against one section.
    assert not any("Release" in text for text, q in queries.items() if q["kind"] == "heading")
    for qid, judged in dataset.qrels.items():
        assert len(judged) == 1 and set(judged) <= set(dataset.corpus), qid
