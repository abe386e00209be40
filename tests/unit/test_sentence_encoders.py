"""The local embedding model: ONNX Runtime against sentence-transformers on PyTorch, same weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag_server.infra.sentence_encoders import (
    ModelLayout,
    OnnxSentenceEncoder,
    TorchSentenceEncoder,
    load_sentence_encoder,
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


def test_export_happens_once_per_model_and_is_reused(cache_dir: Path) -> None:
    load_sentence_encoder(MODEL, "onnx", cache_dir)
    files = list(cache_dir.glob("*.onnx"))
    assert len(files) == 1 and not list(cache_dir.glob("*.tmp"))
    mtime = files[0].stat().st_mtime_ns
    load_sentence_encoder(MODEL, "onnx", cache_dir)
    assert files[0].stat().st_mtime_ns == mtime


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
