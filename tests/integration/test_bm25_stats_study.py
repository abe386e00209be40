"""The BM25 statistics study end to end on a tiny BEIR dataset: real databases, real chunking, the real
native engine next to the reference under both kinds of statistics."""

from __future__ import annotations

import json
from pathlib import Path

from rag_server.config import Settings
from rag_server.evaluation.bm25_stats_study import StudyOptions, run_study, text_table

# Twelve documents; each query names the one word only its relevant document has, plus words many share.
WORDS = ["volcano", "penguin", "violin", "glacier", "espresso", "telescope", "sourdough", "hurricane",
         "chess", "cactus", "submarine", "origami"]  # fmt: skip


def make_dataset(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as fh:
        for n, word in enumerate(WORDS):
            text = f"notes on the {word}: common words, shared words and the {word} again"
            fh.write(json.dumps({"_id": f"d{n}", "title": f"About {word}", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as fh:
        for n, word in enumerate(WORDS):
            fh.write(json.dumps({"_id": f"q{n}", "text": f"shared notes about {word}"}) + "\n")
    rows = ["query-id\tcorpus-id\tscore", *(f"q{n}\td{n}\t1" for n in range(len(WORDS)))]
    (root / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return root


async def test_study_scores_both_statistics_and_the_native_engine_equals_the_global_reference(
    settings: Settings, tmp_path: Path
) -> None:
    dataset = make_dataset(tmp_path / "tiny")
    options = StudyOptions(
        dataset=dataset,
        setups=["mixed", "halves"],
        other_size=40,
        quiet=True,
        json_path=tmp_path / "out.json",
    )
    result = await run_study(settings, options)
    assert json.loads((tmp_path / "out.json").read_text()) == result
    assert [s["name"] for s in result["setups"]] == ["mixed", "halves"]
    assert not any(s["reused"] for s in result["setups"])

    mixed, halves = result["setups"]
    tiny, other = mixed["collections"]
    assert (tiny["name"], tiny["documents"], tiny["queries"]) == ("tiny", len(WORDS), len(WORDS))
    assert (other["name"], other["documents"], other["queries"]) == ("stdlib-docs", 40, 0)
    # Collection statistics count the collection's chunks only; global ones every chunk of the database.
    assert tiny["statistics"]["collection"]["chunks"] == tiny["chunks"]
    assert tiny["statistics"]["global"]["chunks"] == tiny["chunks"] + other["chunks"]
    assert tiny["statistics"]["global"]["avgdl"] != tiny["statistics"]["collection"]["avgdl"]
    # Each query's unique word finds its document first, whatever the statistics.
    for variant in ("global", "collection"):
        assert tiny["reference"][variant]["ndcg@10"] == 1.0
    assert sum(c["queries"] for c in halves["collections"]) == len(WORDS)
    assert sum(c["documents"] for c in halves["collections"]) == len(WORDS)
    for collection in [tiny, *halves["collections"]]:
        assert collection["native_global"] == collection["reference"]["global"]
        agreement = collection["native_vs_reference_global"]
        assert agreement["queries_with_identical_top100_chunks"] == collection["queries"]
        assert agreement["chunks_unknown_to_reference"] == 0
        assert agreement["max_abs_score_difference"] < 1e-6
        if collection is not tiny:  # a half: its own statistics differ from those of both halves
            assert (
                collection["statistics"]["collection"]["chunks"]
                < collection["statistics"]["global"]["chunks"]
            )
    assert "stdlib-docs" in text_table(result)

    again = await run_study(
        settings, StudyOptions(dataset=dataset, setups=["halves"], other_size=40, quiet=True)
    )
    assert again["setups"][0]["reused"] is True
    assert again["setups"][0]["collections"] == halves["collections"]
