"""generation_plan: an import's stored vectors are judged against the active embedding generation, and
go to a retired or building generation of their model when the active one is another."""

from __future__ import annotations

from rag_server.generations.store import Generation
from rag_server.porting.models import generation_plan

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BASE = Generation(1, "local", MINILM, 384, None, "active")
NEW = Generation(2, "openai", "text-embedding-3-small", 1536, "http://x", "building")


def test_the_active_generations_model_gets_the_vectors() -> None:
    plan = generation_plan("all-MiniLM-L6-v2", 384, [BASE, NEW])
    assert (plan.reuse, plan.generation_id) == (True, 1)
    switched = [
        Generation(2, "openai", NEW.model, 1536, None, "active"),
        Generation(1, "local", MINILM, 384, None, "retired"),
    ]
    plan = generation_plan(NEW.model, 1536, switched)
    assert (plan.reuse, plan.generation_id) == (True, 2)
    assert plan.reason == f"reusing the stored 1536-d vectors of {NEW.model}"


def test_another_live_generations_model_gets_them_and_the_active_one_is_embedded() -> None:
    switched = [
        Generation(2, "openai", NEW.model, 1536, None, "active"),
        Generation(1, "local", MINILM, 384, None, "retired"),
    ]
    plan = generation_plan(MINILM, 384, switched)
    assert (plan.reuse, plan.generation_id) == (True, 1)
    assert plan.reason.startswith(f"re-embedding with {NEW.model} (the active generation 2)")
    assert "reused for generation 1" in plan.reason
    plan = generation_plan(NEW.model, 1536, [BASE, NEW])  # the building generation's model
    assert (plan.reuse, plan.generation_id) == (True, 2)


def test_no_live_generation_of_the_model_means_everything_is_embedded() -> None:
    dropped_base = [Generation(2, "openai", NEW.model, 1536, None, "active")]
    for model, dim in ((MINILM, 384), (None, 1536), (NEW.model, 384), ("other", 1536)):
        plan = generation_plan(model, dim, dropped_base)
        assert (plan.reuse, plan.generation_id) == (False, None), (model, dim)
        assert plan.reason.startswith(f"re-embedding with {NEW.model}")
