"""The sources of one chat answer: search under the chat's floor (`RAG_CHAT_MIN_SIMILARITY`), and a
follow-up no LLM made standalone searched again with the question before it."""

from __future__ import annotations

import time

from rag_server.chat.answer import content_words, sources_from_hits, words
from rag_server.chat.models import QueryRequest
from rag_server.chat.turn import Turn, elapsed_ms
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.retrieval.models import MAX_QUERY_CHARS, SearchRequest
from rag_server.retrieval.service import search


async def find_sources(runtime: Runtime, turn: Turn, query: str) -> None:
    """Set `turn.hits` and `turn.sources` for `query` (the question, or its condensed form)."""
    await _search(runtime, turn, query)
    if (
        not turn.hits
        and turn.condensed_query is None
        and (asked := _last_question(turn))
        and leans_on_earlier(turn.question)
    ):
        # A follow-up no LLM made standalone ("How long does that take?") found nothing on its own:
        # search again with the question before it, and say so (condensed_query).
        joined = f"{asked} {turn.question}"
        await _search(runtime, turn, joined)
        if turn.hits:
            turn.condensed_query = _searchable(joined)


def chat_floor(settings: Settings, request: QueryRequest) -> float | None:
    """The sources' min_similarity: the question's, else the setting's; -1 is none (saves a query)."""
    floor = settings.chat_min_similarity if request.min_similarity is None else request.min_similarity
    return None if floor <= -1 else floor


async def _search(runtime: Runtime, turn: Turn, query: str) -> None:
    start = time.perf_counter()
    result = await search(
        runtime,
        SearchRequest(
            query=_searchable(query),
            top_k=turn.request.top_k,
            search_type=turn.search_type,
            filters=turn.request.filters,
            min_similarity=chat_floor(runtime.settings, turn.request),
        ),
        scope=turn.collection_ids,
        pool=turn.reads,
    )
    turn.timings["search"] = elapsed_ms(start)
    for name, value in result.timings_ms.items():
        turn.timings[f"search_{name}"] = value
    turn.hits = list(result.results)
    turn.sources = sources_from_hits(turn.hits)


def _searchable(query: str) -> str:
    # A question and the one before it, or an LLM's condensed question, can each be as long as a search
    # query may be: keep the end, where the latest question is.
    return query[-MAX_QUERY_CHARS:]


# Words by which a question leans on an earlier one ("Is that the same for part-timers?", "How long does
# it last?", "And the other kind?"), and openings of one ("What about children?").
_BACK_REFERENCES = frozenset(
    """
    it its itself that this these those they them their theirs there he him his she her same other others
    else also too again more
    """.split()  # noqa: SIM905
)
_FOLLOW_UP_OPENINGS = ("and", "but", "or", "so", "what about", "how about", "what if")


def leans_on_earlier(question: str) -> bool:
    """Whether `question` reads as a follow-up: it refers back, opens as one, or names at most one thing
    ("Why?", "Children?"). One that names its own subject ("Who won the world cup in 2014?") found
    nothing because nothing bears on it: searched with the question before it, the earlier topic's
    passages passed the floor and were quoted as its answer. The back references are English words; a
    question in Chinese or Japanese is one run of characters (`words`), so it names at most one thing and
    is taken as a follow-up."""
    said = words(question)
    opening = " ".join(said[:2])
    return (
        any(w in _BACK_REFERENCES for w in said)
        or any(opening == o or opening.startswith(f"{o} ") for o in _FOLLOW_UP_OPENINGS)
        or len(content_words(question)) <= 1
    )


def _last_question(turn: Turn) -> str | None:
    """The session's previous question (None in a new session)."""
    return next((m.content for m in reversed(turn.history) if m.role == "user"), None)
