"""open_runtime builds the embedder and LLM from settings, or uses the ones a caller hands in; an app's
start-up leaves what it loaded to reference counting."""

from __future__ import annotations

import gc

import pytest

from rag_server.api.app import create_app
from rag_server.chat.models import QueryRequest
from rag_server.chat.service import ChatService
from rag_server.config import Settings
from rag_server.infra.embeddings import EmbedderRole, LazyEmbedder, LocalEmbedder
from rag_server.infra.llm import build_llm
from rag_server.infra.runtime import open_runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.retrieval.models import SearchRequest
from rag_server.retrieval.service import search
from tests.fakes.embedder import RecordingEmbedder
from tests.fakes.llm_server import FakeLLM


async def test_without_handed_in_services_the_model_stays_unloaded_and_no_llm(settings: Settings) -> None:
    async with open_runtime(settings, migrate=True) as runtime:
        assert isinstance(runtime.embedder, LazyEmbedder)
        assert runtime.embedder.loaded is None  # `rag-server migrate` must not load a model
        assert runtime.chat_llm() == (None, None)


async def test_a_misconfigured_llm_does_not_stop_the_runtime(settings: Settings) -> None:
    broken = settings.model_copy(update={"llm_provider": "openai", "llm_model": None})
    async with open_runtime(broken, migrate=False) as runtime:
        llm, error = runtime.chat_llm()
        assert llm is None
        assert error is not None and "RAG_LLM_MODEL" in error


async def test_handed_in_embedder_and_llm_are_the_ones_used(settings: Settings, fake_llm: FakeLLM) -> None:
    embedder = RecordingEmbedder(dim=settings.embedding_dim)
    llm = build_llm(
        Settings(
            llm_provider="openai", llm_base_url=fake_llm.base_url, llm_model="fake-model", llm_max_retries=0
        )
    )
    assert settings.llm_provider == "none"  # the handed-in LLM wins over settings without one
    async with open_runtime(settings, migrate=True, embedder=embedder, llm=llm) as runtime:
        assert runtime.embedder is embedder and runtime.chat_llm() == (llm, None)
        text = "HNSW is a graph index for approximate nearest neighbour search in pgvector."
        await ingest_documents_direct(runtime, [DirectDocument("hnsw.txt", text.encode(), {})])
        assert any(text in t for call in embedder.calls for t in call)  # chunks embedded by it

        result = await search(runtime, SearchRequest(query="graph index", search_type="vector", top_k=1))
        assert result.results[0].document_name == "hnsw.txt"
        assert embedder.queries[-1] == "graph index"  # a query, not a document
        assert ["graph index"] not in embedder.calls

        chat = ChatService(runtime)
        answer = await chat.answer(QueryRequest(query="what is HNSW?", search_type="bm25"))
        assert answer.answer_mode == "llm" and answer.llm_error is None
        assert "answer" in fake_llm.kinds()
        session = await chat.get_session(answer.session_id)
        assert session.llm_model == "fake-model"  # the handed-in LLM's model, not the settings' (none)
    assert embedder.closed == 0  # a handed-in embedder stays its owner's to close


async def test_an_embedder_of_another_dimension_is_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="RAG_EMBEDDING_DIM"):
        async with open_runtime(settings, embedder=RecordingEmbedder(dim=settings.embedding_dim + 1)):
            pass


@pytest.mark.parametrize(("role", "loaded"), [("documents", {"fp32"}), ("queries", {"int8"})])
async def test_a_process_loads_the_model_for_what_it_embeds(
    settings: Settings, role: EmbedderRole, loaded: set[str]
) -> None:
    """A worker ("documents") loads the fp32 graph, a server ("queries") the int8 one, at start-up."""
    async with open_runtime(settings, migrate=False, load_embedder=role) as runtime:
        assert isinstance(runtime.embedder, LazyEmbedder)
        local = runtime.embedder.loaded
        assert isinstance(local, LocalEmbedder) and set(local._encoders) == loaded


async def test_a_started_app_is_out_of_the_collectors_full_walks(settings: Settings) -> None:
    """A full garbage collection over the start-up heap held the event loop ~200 ms at a time (the p99
    of /search, infra/heap.py): the app's start-up moves what it loaded to the permanent generation."""
    gc.unfreeze()  # what earlier tests in this process froze
    app = create_app(settings, embedder=RecordingEmbedder())
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 1000
        runtime = app.state.runtime
        assert not any(o is runtime for o in gc.get_objects())  # frozen: no generation holds it
    assert gc.get_freeze_count() == 0  # a stopped app's objects can be collected again


async def test_an_app_says_at_start_up_why_its_llm_is_unusable(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The LLM is built when the server starts (not by the first chat request, whose event loop it held
    for seconds): a misconfiguration is a warning in the start-up log, and the server still starts."""
    broken = settings.model_copy(update={"llm_provider": "openai", "llm_model": None})
    app = create_app(broken, embedder=RecordingEmbedder())
    with caplog.at_level("WARNING", logger="rag_server.api.app"):
        async with app.router.lifespan_context(app):
            warned = [r.getMessage() for r in caplog.records if r.name == "rag_server.api.app"]
            assert len(warned) == 1 and "RAG_LLM_MODEL" in warned[0], warned
