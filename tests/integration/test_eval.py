"""`rag-server eval` end to end on a tiny BEIR dataset: real ingestion, real search, real peers.

The dataset is made so that each query names a word only its relevant document contains: a
broken ingestion, id mapping or chunk-to-document folding shows up as a wrong score.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag_server.config import Settings
from rag_server.evaluation.runner import INGEST_MARKER, EvalOptions, eval_database_name, run_eval
from rag_server.infra import admin
from rag_server.infra.database import with_database

SUBJECTS = [
    ("volcano", "magma erupts from the crater and lava flows down the slopes"),
    ("penguin", "flightless birds that swim in cold antarctic waters and eat krill"),
    ("violin", "a string instrument played with a bow in orchestras"),
    ("glacier", "a slow river of ice carving valleys in the mountains"),
    ("espresso", "strong coffee brewed by forcing hot water through ground beans"),
    ("telescope", "an optical instrument that gathers light from distant stars"),
    ("sourdough", "bread leavened by wild yeast and lactic acid bacteria"),
    ("hurricane", "a tropical cyclone with violent winds and heavy rain"),
    ("chess", "a board game of strategy with kings, queens and pawns"),
    ("cactus", "a desert plant that stores water in thick stems and has spines"),
    ("submarine", "a watercraft that travels underwater using ballast tanks"),
    ("origami", "the japanese art of folding paper into shapes"),
    ("tornado", "a rotating column of air touching the ground"),
    ("beekeeping", "keeping hives of honey bees to collect honey and wax"),
    ("marathon", "a long distance running race over forty two kilometres"),
    ("photosynthesis", "plants turn sunlight, water and carbon dioxide into sugar"),
    ("earthquake", "the ground shakes when tectonic plates slip along a fault"),
    ("saxophone", "a brass woodwind instrument used in jazz"),
    ("vaccine", "a preparation that trains the immune system against a pathogen"),
    ("lighthouse", "a tower with a bright lamp that guides ships at night"),
]
QUERIES = {"q1": "volcano", "q2": "espresso", "q3": "origami", "q4": "saxophone", "q5": "lighthouse"}
EXPECTED_METRICS = {"ndcg@10", "recall@10", "recall@100", "mrr@10", "latency_ms"}


def make_dataset(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as fh:
        for n, (word, text) in enumerate(SUBJECTS):
            fh.write(json.dumps({"_id": f"doc{n}", "title": f"All about the {word}", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as fh:
        for qid, word in QUERIES.items():
            fh.write(json.dumps({"_id": qid, "text": f"what is a {word}?"}) + "\n")
    ids = {word: f"doc{n}" for n, (word, _) in enumerate(SUBJECTS)}
    rows = ["query-id\tcorpus-id\tscore"] + [f"{qid}\t{ids[word]}\t1" for qid, word in QUERIES.items()]
    # A grade-2 row on another document: graded qrels must load and count.
    rows.append(f"q1\t{ids['earthquake']}\t2")
    (root / "qrels" / "test.tsv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("beir") / "tiny")


def check_result(result: dict[str, Any], *, reused: bool, peers: bool) -> None:
    assert list(result) == ["dataset", "documents", "chunks", "queries", "settings", "modes", "peers"]
    assert result["dataset"] == "tiny"
    assert result["documents"] == len(SUBJECTS)
    assert result["chunks"] >= len(SUBJECTS)
    assert result["queries"] == len(QUERIES)
    assert result["settings"]["reused_database"] is reused
    assert set(result["modes"]) == {"bm25", "vector", "hybrid"}
    assert set(result["peers"]) == ({"bm25s", "llamaindex_hybrid"} if peers else set())
    for scores in [*result["modes"].values(), *result["peers"].values()]:
        assert set(scores) == EXPECTED_METRICS
        assert set(scores["latency_ms"]) == {"p50", "p95"}
        assert 0 < scores["latency_ms"]["p50"] <= scores["latency_ms"]["p95"]
        for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
            assert 0.0 <= scores[metric] <= 1.0
    bm25 = result["modes"]["bm25"]
    # Each query's word occurs in exactly one document; q1's grade-2 document is never found by
    # BM25, so q1's ideal DCG is 2 + 1/log2(3) while it gets 1: nDCG = 0.379 for q1, 1.0 for the rest.
    assert bm25["mrr@10"] == pytest.approx(1.0)
    assert bm25["recall@10"] == pytest.approx((0.5 + 4) / 5)
    assert bm25["ndcg@10"] == pytest.approx((1 / (2 + 1 / 1.5849625) + 4) / 5, abs=1e-3)
    assert result["modes"]["hybrid"]["mrr@10"] >= 0.8
    if peers:
        assert result["peers"]["bm25s"]["mrr@10"] == pytest.approx(1.0)


async def marker(url: str) -> Any:
    async with admin.connection(url) as conn:
        return await admin.get_meta(conn, INGEST_MARKER)


async def test_eval_builds_reuses_and_rebuilds(
    dataset: Path, settings: Settings, pg_server: str, tmp_path: Path
) -> None:
    eval_url = with_database(pg_server, eval_database_name(dataset, settings))
    out = tmp_path / "out"
    first = await run_eval(
        settings,
        EvalOptions(
            dataset=dataset, peers=True, json_path=out / "e.json", report_path=out / "e.md", quiet=True
        ),
    )
    check_result(first, reused=False, peers=True)
    assert json.loads((out / "e.json").read_text()) == first
    markdown = (out / "e.md").read_text()
    assert "| peer: llamaindex_hybrid |" in markdown and "![" in markdown
    assert (out / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    built_at = await marker(eval_url)
    assert built_at is not None

    second = await run_eval(settings, EvalOptions(dataset=dataset, modes=["bm25", "hybrid"], quiet=True))
    assert second["settings"]["reused_database"] is True
    assert set(second["modes"]) == {"bm25", "hybrid"}
    assert second["modes"]["bm25"]["ndcg@10"] == first["modes"]["bm25"]["ndcg@10"]
    assert await marker(eval_url) == built_at  # not re-ingested

    fresh = await run_eval(settings, EvalOptions(dataset=dataset, fresh=True, quiet=True))
    check_result(fresh, reused=False, peers=False)
    assert await marker(eval_url) != built_at

    # An ingestion that never wrote its completion marker (killed half-way) is rebuilt, not reused.
    async with admin.connection(eval_url) as conn:
        assert await admin.delete_meta(conn, INGEST_MARKER)
    rebuilt = await run_eval(settings, EvalOptions(dataset=dataset, max_queries=2, quiet=True))
    assert rebuilt["settings"]["reused_database"] is False
    assert rebuilt["queries"] == 2
    assert rebuilt["documents"] == len(SUBJECTS)


async def test_queries_at_int8_search_the_corpus_stored_at_its_own_precision(
    dataset: Path, settings: Settings, pg_server: str
) -> None:
    int8 = settings.model_copy(update={"embedding_precision": "int8"})
    fp32_name, int8_name = eval_database_name(dataset, settings), eval_database_name(dataset, int8)
    assert fp32_name != int8_name
    # Precision is in the key only when it is not fp32: fp32 databases built earlier keep their names.
    explicit_fp32 = settings.model_copy(update={"embedding_precision": "fp32"})
    assert eval_database_name(dataset, explicit_fp32) == fp32_name
    # The query precision is not: queries at any precision search the same stored corpus.
    fp32_queries = settings.model_copy(update={"embedding_query_precision": "fp32"})
    assert eval_database_name(dataset, fp32_queries) == fp32_name

    # The default: the corpus stored at fp32, the queries embedded at int8.
    mixed = await run_eval(settings, EvalOptions(dataset=dataset, fresh=True, quiet=True))
    assert mixed["settings"]["database"] == fp32_name and mixed["settings"]["reused_database"] is False
    assert mixed["settings"]["embedding_precision"] == "fp32"
    assert mixed["settings"]["query_embedding_precision"] == "int8"
    assert mixed["modes"]["vector"]["mrr@10"] >= 0.8
    async with admin.connection(with_database(pg_server, fp32_name)) as conn:
        assert (await admin.get_meta(conn, INGEST_MARKER))["documents"] == len(SUBJECTS)

    alone = await run_eval(int8, EvalOptions(dataset=dataset, modes=["vector"], quiet=True))
    assert alone["settings"]["database"] == int8_name
    assert alone["settings"]["embedding_precision"] == "int8"
    assert alone["settings"]["query_embedding_precision"] == "int8"


def run_cli(
    args: list[str], database_url: str, data_dir: Path, module: str = "rag_server"
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "RAG_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_writes_json_report_and_peers(
    dataset: Path, database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    proc = run_cli(
        [
            "eval",
            "--dataset",
            str(dataset),
            "--peers",
            "--top-k",
            "50",
            "--json",
            str(out / "r.json"),
            "--report",
            str(out / "r.md"),
        ],
        database_url,
        data_dir,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "r.json").read_text())
    # Reused when the test above built it first; built now when this test runs alone.
    check_result(result, reused=result["settings"]["reused_database"], peers=True)
    assert result["settings"]["top_k"] == 50
    for label in ("bm25", "vector", "hybrid", "peer: bm25s", "peer: llamaindex_hybrid"):
        assert label in proc.stdout
    assert (out / "r.png").is_file()


def test_cli_reports_malformed_dataset(
    dataset: Path, database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    bad = make_dataset(tmp_path / "bad")
    (bad / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n{"_id": "q2" "text": "broken"}\n')
    proc = run_cli(["eval", "--dataset", str(bad)], database_url, data_dir)
    assert proc.returncode == 2
    assert f"{bad / 'queries.jsonl'}:2: invalid JSON" in proc.stderr
    proc = run_cli(["eval", "--dataset", str(dataset), "--modes", "bm25,sparse"], database_url, data_dir)
    assert proc.returncode == 2
    assert "--modes" in proc.stderr


def test_cli_refuses_an_output_it_could_not_write_before_the_run(
    dataset: Path, database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    # Found only at the end before: after the whole evaluation, a traceback and nothing written.
    (tmp_path / "notes.txt").write_text("x")
    for option, target, said in (
        ("--json", tmp_path, f"--json: {tmp_path} is a folder: name the file to write"),
        ("--report", tmp_path / "notes.txt" / "r.md", f"--report: {tmp_path / 'notes.txt'} is not a folder"),
    ):
        proc = run_cli(["eval", "--dataset", str(dataset), option, str(target)], database_url, data_dir)
        assert (proc.returncode, proc.stderr.strip(), proc.stdout) == (2, f"error: {said}", ""), proc.stderr
    # The BM25 statistics study (`just bm25-stats`), an hour long, too.
    study_args = ["--dataset", str(dataset), "--json", str(tmp_path)]
    study = run_cli(study_args, database_url, data_dir, module="rag_server.evaluation.bm25_stats_study")
    said = f"--json: {tmp_path} is a folder: name the file to write"
    assert (study.returncode, study.stderr.strip(), study.stdout) == (2, f"error: {said}", ""), study.stderr


# Each query's relevant document says it in other words; a decoy repeats the query's words off topic.
# BM25 finds only the decoy, the vector leg ranks the relevant one first: only a weight near the vector
# leg ranks both queries right (min-max convex: alpha above ~0.8 here), so tuning has one clear answer.
TUNABLE = [
    (
        "automobile repair",
        "A mechanic fixes cars: replacing brakes, tuning engines and changing the oil of vehicles.",
        "Minutes of the committee: the automobile repair line item was moved to next year's municipal "
        "budget spreadsheet.",
    ),
    (
        "canine nutrition",
        "What dogs should eat: puppies need protein, and older hounds fewer calories.",
        "The canine nutrition seminar was cancelled; refunds go back to the credit card used for the ticket.",
    ),
]


def make_tunable_dataset(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    docs = [(f"rel{n}", rel) for n, (_, rel, _) in enumerate(TUNABLE)]
    docs += [(f"decoy{n}", decoy) for n, (_, _, decoy) in enumerate(TUNABLE)]
    docs.append(("penguins", "Penguins swim in cold antarctic waters and eat krill."))
    with (root / "corpus.jsonl").open("w") as fh:
        for doc_id, text in docs:
            fh.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as fh:
        for n, (query, _, _) in enumerate(TUNABLE):
            fh.write(json.dumps({"_id": f"q{n}", "text": query}) + "\n")
    rows = ["query-id\tcorpus-id\tscore"] + [f"q{n}\trel{n}\t1" for n in range(len(TUNABLE))]
    (root / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return root


async def collection_alpha(url: str, name: str) -> Any:
    async with admin.connection(url) as conn:
        return await conn.fetchval("SELECT hybrid_alpha FROM collections WHERE name = $1", name)


async def test_cli_tune_writes_the_best_alpha_and_later_runs_use_it(
    database_url: str, settings: Settings, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = make_tunable_dataset(tmp_path / "tunable")
    eval_url = with_database(database_url, eval_database_name(dataset, settings))
    out = tmp_path / "tuned.json"
    proc = run_cli(
        [
            "eval",
            "--dataset",
            str(dataset),
            "--tune",
            "--modes",
            "hybrid",
            "--group-by",
            "document",
            "--json",
            str(out),
        ],
        database_url,
        data_dir,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    tuning = result["tuning"]
    grid = tuning["grid"]
    assert set(grid) == {str(round(0.1 * i, 1)) for i in range(11)}
    # Below ~0.8 the decoys come first (nDCG 1/log2(3) each), at 0.9 and 1.0 both queries are right;
    # of the best, the one nearest the default 0.5 is chosen.
    assert grid["0.0"] == pytest.approx(1 / 1.5849625, abs=1e-3)
    assert grid["0.5"] < 1.0 and grid["0.9"] == pytest.approx(1.0) and grid["1.0"] == pytest.approx(1.0)
    assert tuning["alpha"] in (0.8, 0.9) and grid[str(tuning["alpha"])] == pytest.approx(1.0)
    assert tuning["previous_alpha"] is None and tuning["tune_queries"] == 2
    assert await collection_alpha(eval_url, "tunable") == tuning["alpha"]
    assert result["settings"]["collection_hybrid_alpha"] == tuning["alpha"]
    assert result["modes"]["hybrid"]["ndcg@10"] == pytest.approx(1.0)  # scored with the tuned weight

    # A later run without --tune searches with the collection's weight; --holdout scores only the
    # queries kept out (q1 of q0, q1) and leaves the weight alone.
    later = await run_eval(
        settings, EvalOptions(dataset=dataset, modes=["hybrid"], holdout=0.5, quiet=True, group_by="document")
    )
    assert "tuning" not in later and later["queries"] == 1
    assert later["settings"]["collection_hybrid_alpha"] == tuning["alpha"]
    assert later["modes"]["hybrid"]["ndcg@10"] == pytest.approx(1.0)
    # That weight was tuned on every query, the held-out one too: the run says so, even quiet.
    assert f"stored hybrid_alpha {tuning['alpha']}" in capsys.readouterr().err
    # The same query at the server's default weight ranks its decoy first.
    async with admin.connection(eval_url) as conn:
        await conn.execute("UPDATE collections SET hybrid_alpha = NULL WHERE name = 'tunable'")
    default = await run_eval(
        settings, EvalOptions(dataset=dataset, modes=["hybrid"], holdout=0.5, quiet=True, group_by="document")
    )
    assert default["modes"]["hybrid"]["ndcg@10"] == pytest.approx(1 / 1.5849625, abs=1e-3)
    assert "stored hybrid_alpha" not in capsys.readouterr().err  # no stored weight, nothing to say
