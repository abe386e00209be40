"""Building answers: extractive (no LLM), or LLM-written with inline [n] citations (the prompts are
chat/prompts.py); condense; titles.

Everything LLM-related is guarded: a failure or timeout raises `LLMFailure` with a readable sentence,
and the caller falls back to the extractive answer. Nothing here touches the database.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import Stemmer
from llama_index.core.llms import LLM, ChatMessage, MessageRole

from rag_server.chat.models import ChatMessageOut, Source
from rag_server.chat.prompts import TITLE_SYSTEM_PROMPT, condense_messages, hit_place
from rag_server.chat.usage import TokenUsage, reported_usage
from rag_server.infra.metrics import observe_llm
from rag_server.ingestion.parsing.base import HEADING_SEPARATOR
from rag_server.retrieval.models import SearchHit
from rag_server.text import CJK_RUN, clean_generated, fold_latin

EXTRACTIVE_HEADER = "Extractive answer (no LLM configured): the most relevant passages:"
FALLBACK_HEADER = "Extractive answer (the LLM was unavailable): the most relevant passages:"
NO_SOURCES_ANSWER = "No relevant passages were found in the indexed documents for this question."
# A citation's excerpt is the passage as the LLM was given it: a chunk (RAG_CHUNK_SIZE tokens, 128 by
# default: about 500-900 characters) whole, so the sentence an answer came from is in it (400
# characters cut the end off most chunks). The bound is for sheet rows, which are packed whole.
EXCERPT_CHARS = 4000
TITLE_CHARS = 60

T = TypeVar("T")

# Words that carry no topic: ignored when matching question words to passage sentences.
_STOPWORDS = frozenset(
    """
    a an and are as at be but by can could did do does for from had has have how i if in into is it
    its me my not of on or our so than that the their them then there these they this to was we were
    what when where which who whom why will with would you your about tell explain please
    """.split()  # noqa: SIM905
)
# A word: letters and digits of any script ([^\W_]), with the combining marks some texts spell accents
# and vowel points with (decomposed Latin, Hebrew niqqud, Arabic harakat; not alphanumeric to `re`), and
# an apostrophe or hyphen inside it. Only ASCII letters counted before: "Kühlschrank" was "k" and
# "hlschrank", a Hebrew or Arabic question had no word at all. A hyphen before a digit ends the word, as
# BM25 reads it (migration 0028): "FY-2024" is "fy" and "2024".
_LETTER = r"[^\W_][\u0300-\u036f\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670]*"
_WORD = re.compile(rf"(?:{_LETTER})+(?:(?:['’]|-(?!\d))(?:{_LETTER})+)*")
# Chinese and Japanese end a sentence with 。！？ and no space after it; Arabic asks with ؟, Hindi ends
# with ।.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？؟।])\s*")
_FULL_STOPS = ("。", "！", "？")
# French and Italian elided articles and pronouns only: English contractions (they're, we'll) are not.
_ELISION = re.compile(r"^(?:[cdjlmnst]|qu|jusqu|lorsqu|puisqu|un|all|dall|dell|nell|sull)'(?=[^\W\d_]{2})")


class LLMFailure(Exception):
    """The LLM errored or timed out; str(exc) is a sentence fit for the `llm_error` field."""


# --- sources and the extractive answer ------------------------------------------------------------


def sources_from_hits(hits: Sequence[SearchHit]) -> list[Source]:
    return [
        Source(
            n=i,
            chunk_id=hit.chunk_id,
            document_id=hit.document_id,
            document_name=hit.document_name,
            page=hit.page,
            excerpt=_shorten(hit.text, EXCERPT_CHARS),
            score=hit.score,
            heading_path=hit.heading_path,
            location=hit.location,
            document_version=hit.document_version,
        )
        for i, hit in enumerate(hits, start=1)
    ]


def extractive_answer(
    question: str, hits: Sequence[SearchHit], *, header: str = EXTRACTIVE_HEADER, max_passages: int = 3
) -> str:
    """The best-matching sentences of the top passages that bear on the question (`bears_on`), each
    cited [n] (n = position in the sources)."""
    if not hits:
        return NO_SOURCES_ANSWER
    terms = topic_terms(question)
    lines = [header]
    best_vector = max((h.vector.score for h in hits[:max_passages] if h.vector is not None), default=0.0)
    for n, hit in enumerate(hits[:max_passages], start=1):
        if n > 1 and not bears_on(hit, best_vector, terms):
            continue
        where = hit_place(hit, "p.")
        path = (hit.heading_path or "").split(HEADING_SEPARATOR)
        headings = frozenset(" ".join(h.split()) for h in path if h.strip())
        lines.append(f"- {key_sentences(hit.text, terms, headings=headings)} [{n}] ({where})")
    return "\n".join(lines)


# Content words from which a passage's text, not its title and headings, is most of its embedding.
SELF_EMBEDDED_WORDS = 8


def bears_on(hit: SearchHit, best_vector: float, terms: set[str]) -> bool:
    """Whether a passage after the first has evidence of its own: a question word in its text, or a
    vector similarity at least half the best one's from a text long enough to be what was embedded. A
    search returns its top k whatever they are, and fusion ranks them relative to each other (min-max:
    the last of a few is 0): in a small collection a question about the crew also gets the tide tables,
    which an answer must not quote as "most relevant". Both legs also read the document's title and
    headings (`search_text`): in a deck titled "Lighthouses" every slide matches "lighthouse", and a
    speaker note "Mention 1822." (0.52 against the best passage's 0.59, through its title) was quoted. A
    hit whose legs are unknown is kept. Half: MiniLM's unrelated passages sit near 0.05 when a related
    one is ~0.5."""
    if hit.vector is None and hit.bm25 is None:
        return True
    if _stems(terms) & _stems(topic_terms(hit.text)):
        return True
    # Words, not topic terms: a run of CJK characters counts once (its pairs would make a line of nine
    # characters "long enough", and the English model's vectors for these scripts are weak evidence).
    return (
        hit.vector is not None
        and hit.vector.score >= 0.5 * best_vector
        and len(content_words(hit.text)) >= SELF_EMBEDDED_WORDS
    )


def key_sentences(
    text: str,
    terms: set[str],
    max_sentences: int = 2,
    max_chars: int = 350,
    headings: frozenset[str] = frozenset(),
) -> str:
    """Up to `max_sentences` sentences sharing the most question words (in any inflection: `_stems`), in
    their original order. `headings`: the passage's heading path, whose lines in `text` are headings."""
    units = _text_units(text, headings)
    sentences = [s.strip() for unit in units for s in _SENTENCE_END.split(unit) if s.strip()]
    if not sentences:
        return ""
    stems = _stems(terms)
    overlap = [len(stems & _stems(topic_terms(sentence))) for sentence in sentences]
    best = sorted((i for i in range(len(sentences)) if overlap[i]), key=lambda i: (-overlap[i], i))
    # Nothing matches a question word: the passage's opening says what it is about.
    chosen = best[:max_sentences] or [0]
    quoted = ""
    for i in sorted(chosen):
        # No space after a CJK sentence end (none is written there).
        quoted += sentences[i] if not quoted or quoted.endswith(_FULL_STOPS) else f" {sentences[i]}"
    return _shorten(quoted, max_chars)


# A markdown heading, list item or quote marker at the start of a line.
_LINE_MARKER = re.compile(r"^\s{0,3}(?:#{1,6}|[-*+>]|\d{1,3}[.)])\s+")


def _text_units(text: str, headings: frozenset[str] = frozenset()) -> list[str]:
    """Paragraphs and list items with their markers dropped: a sentence never runs from a heading into
    the paragraph below it, and a quoted line never starts with `#` (it would render as a heading inside
    the answer's list). Headings are left out when there is anything else: they label the passage (its
    heading path goes with the citation), they do not answer (a heading "Install" would outrank the
    sentence saying how). A heading is a Markdown one or a line that is one of `headings` (a Word
    heading, a slide's title: lines of their own, no marker)."""
    units: list[tuple[str, bool]] = []  # (text, is a heading)
    for block in re.split(r"\n\s*\n", text):
        current: list[str] = []
        for line in block.splitlines():
            marker = _LINE_MARKER.match(line)
            if marker and current:
                units.append((" ".join(current), False))
                current = []
            if marker and marker.group(0).lstrip().startswith("#"):
                units.append((line[marker.end() :], True))
                continue
            if not marker and " ".join(line.split()) in headings:
                if current:
                    units.append((" ".join(current), False))
                    current = []
                units.append((line, True))
                continue
            current.append(line[marker.end() :] if marker else line)
        units.append((" ".join(current), False))
    units = [(" ".join(unit.split()), heading) for unit, heading in units if unit.strip()]
    body = [unit for unit, heading in units if not heading]
    return body or [unit for unit, _ in units]


def fallback_title(question: str) -> str:
    """The question itself, cut at a word boundary."""
    return _shorten(" ".join(question.split()), TITLE_CHARS)


def words(text: str) -> list[str]:
    """The words of `text` in order, lower-cased (a hyphen or apostrophe inside one keeps it whole; a
    typographic apostrophe is read as ', so "employee’s" stems as "employee's" does)."""
    return [m.lower().replace("’", "'") for m in _WORD.findall(text)]


def content_words(text: str) -> set[str]:
    """The words of `text` that say what it is about: without English stop words."""
    return {w for w in words(text) if w not in _STOPWORDS and len(w) > 1}


def topic_terms(text: str) -> set[str]:
    """What a question and a sentence are matched by: their content words, each run of CJK characters in
    them as its pairs of characters (a lone one as itself), as the BM25 leg reads them (rag_bm25_text):
    these scripts put no space between words, so "会議室は予約制ですか" is one "word" that no sentence
    holds, while its pairs 会議, 議室, 予約 are in the sentence that answers it."""
    terms: set[str] = set()
    for word in words(text):
        # French and Italian elisions: l'élève, d'hygiène, qu'il, dell'anno also match élève, hygiène...
        elided = _ELISION.match(word)
        if elided and (rest := word[elided.end() :]) not in _STOPWORDS:
            terms.add(rest)
        for part in CJK_RUN.split(word):
            if len(part) > 1 and part not in _STOPWORDS:
                terms.add(part)
        for run in CJK_RUN.findall(word):
            terms.update(run[i : i + 2] for i in range(max(len(run) - 1, 1)))
    return terms


# Question and sentence words are compared by their Snowball English stems, the stems of PostgreSQL's
# 'english' configuration (the BM25 leg): "last" meets "lasts" and "lasting" (without it, "How long does
# it last?" quoted "the last dose" over "lasts ten years"), "regenerate" meets "regeneration" (a passage
# BM25 found by that word must show it). A stemmer object is not for two threads at once: one each.
_stemmers = threading.local()


def _stems(words: set[str]) -> set[str]:
    """Their stems, accents folded first as the BM25 leg folds them (0027): "eleve" meets "élève"."""
    stemmer = getattr(_stemmers, "english", None)
    if stemmer is None:
        stemmer = _stemmers.english = Stemmer.Stemmer("english")
    return set(stemmer.stemWords([fold_latin(w) for w in words]))


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,;:") + "…"


# --- LLM calls (guarded) ---------------------------------------------------------------------------


def describe_failure(llm: LLM, exc: BaseException, timeout_s: float) -> str:
    model = getattr(llm, "model", None) or type(llm).__name__
    if isinstance(exc, TimeoutError):
        return f"The LLM ({model}) did not respond within {timeout_s:g} s; showing the extractive answer."
    detail = " ".join(str(exc).split())[:300] or type(exc).__name__
    return f"The LLM ({model}) failed ({type(exc).__name__}: {detail}); showing the extractive answer."


async def guarded(llm: LLM, call: Awaitable[T], timeout_s: float) -> T:
    """Await one LLM call within `timeout_s`; any failure becomes LLMFailure.

    Cancellation and the end of a stream (StopAsyncIteration) pass through. `asyncio.timeout`, not
    `wait_for`: on Python 3.11 wait_for returns a result that arrived as its task was cancelled and drops
    the cancel (the stream's reader task then read the whole answer for nobody, test_llm_stream.py).
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await call
    except (asyncio.CancelledError, StopAsyncIteration):
        raise
    except Exception as exc:
        raise LLMFailure(describe_failure(llm, exc, timeout_s)) from exc


async def complete(
    llm: LLM, messages: list[ChatMessage], timeout_s: float, usage: TokenUsage | None = None
) -> str:
    """One non-streamed chat call; raises LLMFailure. `usage`: adds what the provider reports."""
    started = time.perf_counter()
    try:
        response = await guarded(llm, llm.achat(messages), timeout_s)
    except LLMFailure as exc:
        observe_llm(llm, "complete", started, exc.__cause__ or exc)
        raise
    observe_llm(llm, "complete", started)
    count_usage(usage, response.raw)
    return clean_generated(response.message.content or "").strip()


def count_usage(usage: TokenUsage | None, raw: Any) -> None:
    """Add to `usage` what the provider reports in `raw` (a response, a stream chunk), if anything."""
    reported = reported_usage(raw) if usage is not None else None
    if usage is not None and reported is not None:
        usage.add(reported)


async def condense_question(
    llm: LLM,
    question: str,
    history: Sequence[ChatMessageOut],
    timeout_s: float,
    usage: TokenUsage | None = None,
    context_tokens: int | None = None,
) -> str:
    """A standalone version of a follow-up question (the question itself when there is no history).
    `context_tokens`: the model's context, which the conversation is cut to (oldest messages first)."""
    if not history:
        return question
    messages = condense_messages(question, history, context_tokens)
    condensed = await complete(llm, messages, timeout_s, usage)
    # White space in quotes is no question either: search refuses a blank query (text.NotBlank).
    return condensed.strip().strip('"').strip() or question


async def llm_title(llm: LLM, question: str, timeout_s: float) -> str:
    title = await complete(
        llm,
        [
            ChatMessage(role=MessageRole.SYSTEM, content=TITLE_SYSTEM_PROMPT),
            ChatMessage(role=MessageRole.USER, content=question),
        ],
        timeout_s,
    )
    title = " ".join(title.strip().strip('"').split())
    return _shorten(title, TITLE_CHARS) if title else fallback_title(question)
