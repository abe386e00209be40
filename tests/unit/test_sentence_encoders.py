"""The local embedding model: ONNX Runtime against sentence-transformers on PyTorch, same weights."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rag_server.config import Settings
from rag_server.infra.cores import usable_cores
from rag_server.infra.embeddings import LazyEmbedder, LocalEmbedder
from rag_server.infra.sentence_encoders import (
    CACHE_LOCK,
    ModelLayout,
    OnnxSentenceEncoder,
    TorchSentenceEncoder,
    inference_batches,
    load_sentence_encoder,
    model_dim,
    onnx_model_path,
    resolve_model_dir,
)

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = [
    "0-dimensional biomaterials show inductive properties.",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
    "",
    "   ",
    "ünïcödé café 🧬 テスト",
    "mice " * 600,  # beyond the model's 256 word pieces: truncated the same way
    *[f"Sentence number {i} about proteins, cells and the immune response." for i in range(40)],
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def test_onnx_vectors_equal_pytorch_vectors(cache_dir: Path) -> None:
    onnx = load_sentence_encoder(MODEL, "onnx", cache_dir)
    torch = load_sentence_encoder(MODEL, "torch", cache_dir)
    assert isinstance(onnx, OnnxSentenceEncoder) and isinstance(torch, TorchSentenceEncoder)
    got, want = onnx.encode(TEXTS, 16), torch.encode(TEXTS, 16)
    assert got.shape == want.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Batch composition (padding) does not change a text's vector.
    assert np.abs(onnx.encode(TEXTS[:1], 16) - got[:1]).max() < 1e-5


def test_each_row_is_its_own_texts_vector_however_the_call_is_batched(cache_dir: Path) -> None:
    # Batches run longest first: rows must go back to their texts' places. Shortest first here, so a
    # call of one batch (coalesced search queries, a document of short chunks) reorders them too.
    onnx = load_sentence_encoder(MODEL, "onnx", cache_dir)
    texts = ["cells", "a longer text about cells", "the longest of these texts, about proteins and immunity"]
    alone = np.vstack([onnx.encode([text], 16) for text in texts])
    for batch_size in (1, 2, 16):  # 16: all three in one batch
        assert np.abs(onnx.encode(texts, batch_size) - alone).max() < 1e-5, batch_size


def test_concurrent_calls_get_the_vectors_a_call_alone_gets(cache_dir: Path) -> None:
    # The encoder is thread-safe: concurrent calls (LocalEmbedder serialises its own, other callers
    # need not) share the single-threaded runs and still get their own vectors.
    onnx = load_sentence_encoder(MODEL, "onnx", cache_dir)
    calls = [TEXTS[i::4] for i in range(4)] * 3
    alone = [onnx.encode(texts, 4) for texts in calls]
    with ThreadPoolExecutor(len(calls)) as pool:
        together = list(pool.map(lambda texts: onnx.encode(texts, 4), calls))
    for a, b in zip(alone, together, strict=True):
        assert np.abs(a - b).max() < 1e-6


def test_export_happens_once_per_model_and_is_reused(cache_dir: Path) -> None:
    load_sentence_encoder(MODEL, "onnx", cache_dir)
    files = list(cache_dir.glob("*.onnx"))
    assert len(files) == 1 and not list(cache_dir.glob("*.tmp"))
    mtime = files[0].stat().st_mtime_ns
    load_sentence_encoder(MODEL, "onnx", cache_dir)
    assert files[0].stat().st_mtime_ns == mtime


def test_the_export_is_keyed_by_the_weights_content_not_their_files_times(tmp_path: Path) -> None:
    # Every new virtualenv installs the same weights with new file times: it must reuse the export.
    first, second = tmp_path / "venv-1" / "model", tmp_path / "venv-2" / "model"
    shutil.copytree(resolve_model_dir(MODEL), first)
    shutil.copytree(resolve_model_dir(MODEL), second)
    [weights] = second.glob("*.safetensors")
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**12))
    assert ModelLayout.read(first).cache_key() == ModelLayout.read(second).cache_key()
    with weights.open("r+b") as changed:  # other weights of the same size (a fine-tune): a new export
        changed.seek(weights.stat().st_size // 2)
        byte = changed.read(1)
        changed.seek(-1, os.SEEK_CUR)
        changed.write(bytes([byte[0] ^ 1]))
    assert ModelLayout.read(first).cache_key() != ModelLayout.read(second).cache_key()


def test_unsupported_or_missing_models_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither a local sentence-transformers directory"):
        resolve_model_dir("some-org/model-that-is-not-here")
    copy = tmp_path / "max-pooled"
    shutil.copytree(resolve_model_dir(MODEL), copy)
    (copy / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(ValueError, match="not supported by the ONNX runtime"):
        ModelLayout.read(copy)


def test_a_model_in_the_hugging_face_cache_is_found_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--someone--minilm-copy"
    shutil.copytree(resolve_model_dir(MODEL), repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model_dir("someone/minilm-copy") == repo / "snapshots" / "abc123"
    assert ModelLayout.read(resolve_model_dir("someone/minilm-copy")).dim == 384


QUANTIZE = """
import sys
from pathlib import Path
from rag_server.infra.sentence_encoders import ModelLayout, onnx_model_path, resolve_model_dir
layout = ModelLayout.read(resolve_model_dir(sys.argv[1]))
print(onnx_model_path(layout, Path(sys.argv[2]), "int8"))
"""


def test_processes_making_the_int8_graph_at_once_each_get_a_whole_one(
    cache_dir: Path, tmp_path: Path
) -> None:
    """A server, a worker and an eval may start together on a new cache key: ONNX Runtime's quantization
    writes `<model>-inferred.onnx` beside the source under a fixed name, so unserialised processes read
    each other's half-written copy ("Failed to find proper ai.onnx domain")."""
    layout = ModelLayout.read(resolve_model_dir(MODEL))
    shutil.copy(onnx_model_path(layout, cache_dir, "fp32"), tmp_path)  # all start with quantizing
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", QUANTIZE, MODEL, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, [err[-2000:] for _, err in outputs]
    [path] = {out.strip() for out, _ in outputs}
    assert OnnxSentenceEncoder(layout, tmp_path, "int8").encode(TEXTS[:2], 2).shape == (2, 384)
    assert Path(path).stat().st_size < onnx_model_path(layout, tmp_path, "fp32").stat().st_size / 3


def test_int8_variant_is_quantized_once_from_the_fp32_file_and_keyed_by_precision(
    cache_dir: Path, tmp_path: Path
) -> None:
    layout = ModelLayout.read(resolve_model_dir(MODEL))
    fp32 = load_sentence_encoder(MODEL, "onnx", cache_dir)
    # A cache holding only the fp32 export (a database from before int8): int8 is made from that file.
    shutil.copy(onnx_model_path(layout, cache_dir, "fp32"), tmp_path)
    fp32_path = onnx_model_path(layout, tmp_path, "fp32")
    fp32_mtime = fp32_path.stat().st_mtime_ns
    # What a process killed while writing the cache left (a model-sized file, a new name each time).
    (tmp_path / "tmpk1ll3d.onnx.tmp").write_bytes(b"half an export")
    int8 = load_sentence_encoder(MODEL, "onnx", tmp_path, "int8")
    int8_path = onnx_model_path(layout, tmp_path, "int8")
    assert int8_path.name == fp32_path.name.removesuffix(".onnx") + ".int8.onnx"
    written = sorted(p.name for p in tmp_path.iterdir() if p.name != CACHE_LOCK)
    assert written == sorted([fp32_path.name, int8_path.name])  # no temporary file left, nor a dead one's
    assert fp32_path.stat().st_mtime_ns == fp32_mtime  # not exported again
    # int8 weights: about a quarter of the fp32 file.
    assert int8_path.stat().st_size < fp32_path.stat().st_size / 3
    int8_mtime = int8_path.stat().st_mtime_ns
    load_sentence_encoder(MODEL, "onnx", tmp_path, "int8")
    assert int8_path.stat().st_mtime_ns == int8_mtime

    got, want = int8.encode(TEXTS, 16), fp32.encode(TEXTS, 16)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = (got * want).sum(axis=1)
    # Measured: SciFact chunks mean 0.9935, min 0.985; the empty and the truncated texts here ~0.975.
    assert cosines.min() > 0.97 and cosines.mean() > 0.985, cosines
    assert not np.allclose(got, want, atol=1e-4)  # the quantized graph ran, not the fp32 one


def test_int8_needs_onnx_runtime(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RAG_EMBEDDING_PRECISION=int8 applies to the local model on ONNX"):
        load_sentence_encoder(MODEL, "torch", tmp_path, "int8")


def test_inference_batches_run_longest_first_within_a_row_and_token_budget() -> None:
    lengths = [10, 300, 40, 40, 100, 5, 60]
    batches = inference_batches(lengths, max_rows=3, max_tokens=200)
    # Every text exactly once, longest first.
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    # A text longer than the budget runs alone; otherwise rows x the longest length stays in budget.
    assert batches[0] == [1]
    for batch in batches[1:]:
        assert len(batch) <= 3
        assert len(batch) * lengths[batch[0]] <= 200
    assert batches[1:] == [[4, 6], [2, 3, 0], [5]]


def test_inference_batches_respect_the_callers_row_limit_for_short_texts() -> None:
    assert inference_batches([3] * 10, max_rows=4, max_tokens=1_000) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_runs_use_the_configured_cores_or_every_usable_one(cache_dir: Path) -> None:
    one = load_sentence_encoder(MODEL, "onnx", cache_dir, threads=1)
    assert isinstance(one, OnnxSentenceEncoder)
    assert one.cores == 1
    assert one._wide.get_session_options().intra_op_num_threads == 1
    auto = load_sentence_encoder(MODEL, "onnx", cache_dir)
    assert isinstance(auto, OnnxSentenceEncoder)
    assert auto.cores == usable_cores()
    assert auto._wide.get_session_options().intra_op_num_threads == usable_cores()
    # One core: every run on the one single-threaded session, the same vectors.
    assert np.allclose(one.encode(TEXTS, 4), auto.encode(TEXTS, 4), atol=1e-5)


async def test_a_query_at_int8_gets_one_vector_whatever_is_embedded_beside_it(cache_dir: Path) -> None:
    # int8 scales activations per model call: a query sharing a call with others would get a vector
    # that depends on them. Each query runs alone, so concurrent searches see the same vector.
    embedder = LocalEmbedder(MODEL, 384, 64, "onnx", cache_dir, "fp32", query_precision="int8")
    queries = ["vitamin d and bone fractures", "cells", "mice " * 300, "ALDH1 expression in breast cancer"]
    alone = [await embedder.embed_query(q) for q in queries]
    for _ in range(3):
        together = await asyncio.gather(*(embedder.embed_query(q) for q in queries))
        for a, b in zip(alone, together, strict=True):
            assert np.array_equal(a, b)
    # Documents stay at fp32; a query at int8 lands next to its fp32 vector, not on it. The word
    # repeated 300 times (truncated at 256 word pieces) strays most: 0.978 on onnxruntime 1.31-1.32.
    documents = await embedder.embed(queries)
    cosines = [float(q @ d) for q, d in zip(alone, documents, strict=True)]
    assert all(c < 1 - 1e-6 for c in cosines), cosines
    assert min(cosines[:2] + cosines[3:]) > 0.985 and cosines[2] > 0.97, cosines
    assert np.allclose(np.linalg.norm(np.vstack(alone), axis=1), 1.0, atol=1e-5)


def test_each_process_loads_the_encoder_of_what_it_embeds(cache_dir: Path) -> None:
    settings = Settings(_env_file=None, model_cache_dir=cache_dir)  # queries at int8, documents at fp32
    worker = LazyEmbedder(settings).load("documents")
    assert isinstance(worker, LocalEmbedder) and set(worker._encoders) == {"fp32"}
    server = LazyEmbedder(settings).load("queries")
    assert isinstance(server, LocalEmbedder) and set(server._encoders) == {"int8"}
    # At one precision the documents' encoder serves the queries too.
    same = LocalEmbedder(MODEL, 384, 64, "onnx", cache_dir, "int8", query_precision="int8")
    assert same.load_queries() is same.load_documents()


def test_a_query_model_that_cannot_be_written_falls_back_to_the_documents_precision(
    tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A container's model cache may hold only the fp32 graph and refuse writes: the int8 graph cannot be
    # written next to it, so queries are embedded at fp32 (with a warning) instead of failing. The
    # write fails here because a directory holds the int8 graph's name (permissions do not stop root).
    baked = tmp_path / "baked"
    shutil.copytree(cache_dir, baked, ignore=shutil.ignore_patterns("*.int8.onnx"))
    embedder = LocalEmbedder(MODEL, 384, 64, "onnx", baked, "fp32", query_precision="int8")
    documents = embedder.load_documents()  # exports the fp32 graph when the copy has none
    for fp32_graph in baked.glob("*.onnx"):
        fp32_graph.with_suffix(".int8.onnx").mkdir()
    assert embedder.load_queries() is documents
    assert "queries are embedded at fp32" in caplog.text
    assert embedder._query_precision == "fp32"  # fp32 queries share a call again


def test_the_vector_size_is_read_from_the_files_only_when_no_module_changes_it(tmp_path: Path) -> None:
    """`rag-server` checks RAG_EMBEDDING_DIM against it before a database is made for that size."""
    installed = resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2")
    assert model_dim(installed) == 384

    def model(modules: list[str], pooling: dict[str, bool]) -> Path:
        root = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        (root / "1_Pooling").mkdir(parents=True)
        (root / "modules.json").write_text(
            json.dumps([{"type": f"sentence_transformers.models.{m}"} for m in modules])
        )
        (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
        (root / "config.json").write_text(json.dumps({"hidden_size": 384}))
        return root

    mean = {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}
    assert model_dim(model(["Transformer", "Pooling", "Normalize"], mean)) == 384
    assert model_dim(model(["Transformer", "Pooling", "Dense", "Normalize"], mean)) is None
    both = {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}  # 768 numbers side by side
    assert model_dim(model(["Transformer", "Pooling"], both)) is None
