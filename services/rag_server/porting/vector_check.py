"""Whether a source's stored vectors really are the model's, before an import reuses them.

A model's name is no proof: Chroma records its `default` embedding function (all-MiniLM-L6-v2) for a
collection made with `get_or_create_collection(name)`, as LlamaIndex's and many apps' docs do, whatever
model made the vectors they add; a wrong `--embedding-model` is a typo away. Vectors of another model of
the same dimension pass every other check, and every vector search of the collection then compares
unlike vectors. So a few of the source's texts are embedded here and compared with their stored
vectors: the same model gives cosines near 1 (0.8 and more when the app embedded some metadata with the
text, as LlamaIndex does), another model's coordinates near 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from rag_server.generations.active import embedder_for
from rag_server.generations.store import Generation
from rag_server.infra.runtime import Runtime
from rag_server.porting.importer import Source
from rag_server.porting.models import SourceRecord, VectorPlan
from rag_server.text import clean_text

SAMPLE = 8
# Records scanned to find SAMPLE with a text and a vector (Chroma allows either alone).
SCANNED = 4 * SAMPLE
# The median cosine below which the stored vectors are another model's.
MIN_COSINE = 0.5


async def _sample(source: Source, dim: int) -> list[tuple[str, np.ndarray]]:
    """(text, stored vector) of up to SAMPLE of the source's first records that have both."""
    ids: list[str] = []
    async with contextlib.aclosing(source.scan()) as records:  # a pgvector scan holds a transaction
        async for record_id, _ in records:
            ids.append(record_id)
            if len(ids) >= SCANNED:
                break
    out: list[tuple[str, np.ndarray]] = []
    for record in await source.fetch(ids):
        pair = _usable(record, dim)
        if pair is not None:
            out.append(pair)
    return out[:SAMPLE]


def _usable(record: SourceRecord, dim: int) -> tuple[str, np.ndarray] | None:
    if record.embedding is None or not record.text.strip():
        return None
    try:
        text = clean_text(record.text)
    except ValueError:
        return None
    try:
        vector = np.asarray(record.embedding, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):  # no vector: the writer embeds that chunk
        return None
    if vector.shape != (dim,) or not np.isfinite(vector).all() or not np.linalg.norm(vector):
        return None
    return text, vector


async def checked_plan(
    runtime: Runtime, source: Source, plan: VectorPlan, live: Sequence[Generation]
) -> VectorPlan:
    """`plan` (made against the `live` generations), unless it reuses vectors that a sample shows are not
    its generation's model's: then the plan that embeds every chunk here, with the sentence that says why."""
    if not plan.reuse or plan.generation_id is None:
        return plan
    generation = next((g for g in live if g.id == plan.generation_id), None)
    if generation is None:
        return plan
    sample = await _sample(source, generation.dim)
    if not sample:
        return plan
    embedder = await embedder_for(runtime, generation)
    mine = np.asarray(await embedder.embed([text for text, _ in sample]), dtype=np.float64)
    theirs = np.stack([vector for _, vector in sample])
    cosines = (mine * theirs).sum(axis=1) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1))
    median = float(np.median(cosines))
    if median >= MIN_COSINE:
        return plan
    return replace(
        plan,
        reuse=False,
        generation_id=None,
        reason=(
            f"re-embedding with {generation.model}: the stored {generation.dim}-d vectors are not "
            f"{generation.model}'s ({len(sample)} of the texts embedded here: median cosine {median:.2f} "
            f"with their stored vectors, under {MIN_COSINE})"
        ),
    )
