"""Answer building: extractive answers, prompts, and the LLM calls against a real fake HTTP server."""

from __future__ import annotations

import gc
import uuid
from datetime import UTC, datetime

import pytest

from rag_server.chat.answer import (
    EXCERPT_CHARS,
    EXTRACTIVE_HEADER,
    NO_SOURCES_ANSWER,
    LLMFailure,
    complete,
    condense_question,
    extractive_answer,
    fallback_title,
    key_sentences,
    llm_title,
    sources_from_hits,
    topic_terms,
)
from rag_server.chat.llm_stream import stream
from rag_server.chat.models import ChatMessageOut
from rag_server.chat.prompts import (
    TITLE_SYSTEM_PROMPT,
    answer_messages,
    fitting_instructions,
    fitting_sources,
)
from rag_server.config import Settings
from rag_server.infra.llm import LLMConfigError, build_llm, configured_llm
from rag_server.infra.tokenizer import count_tokens
from rag_server.retrieval.models import LegScore, SearchHit
from tests.fakes.llm_server import TITLE, Behaviour, FakeLLM, request_kind

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def hit(text: str, name: str = "doc.txt", page: int | None = None, score: float = 0.5) -> SearchHit:
    return SearchHit(
        chunk_id=1,
        document_id=uuid.uuid4(),
        document_name=name,
        chunk_index=0,
        page=page,
        text=text,
        score=score,
    )


HITS = [
    hit(
        "Postgres is a database. The HNSW index makes vector search fast. It was added in pgvector 0.5.",
        page=3,
    ),
    hit("BM25 ranks documents by term frequency. It is a classic lexical ranking function.", name="bm25.md"),
    hit("Unrelated text about cooking pasta. Boil water first."),
    hit("A fourth passage that is not shown in the extractive answer."),
]


def test_extractive_answer_is_marked_and_cites_passages_in_order() -> None:
    answer = extractive_answer("How does the HNSW index speed up vector search?", HITS)
    lines = answer.splitlines()
    assert lines[0] == EXTRACTIVE_HEADER
    assert len(lines) == 4  # header + the top 3 passages
    assert "HNSW index makes vector search fast" in lines[1]
    assert lines[1].endswith("[1] (doc.txt, p. 3)")
    assert "[2] (bm25.md)" in lines[2]
    assert "[3]" in lines[3]
    assert "[4]" not in answer


def test_an_extractive_answer_quotes_only_passages_that_bear_on_the_question() -> None:
    # A small collection: the search returns every chunk; fusion ranks the unrelated ones last.
    crew, tides, berths, guides, notes = (
        hit("Bo is the pilot; Ada is the captain."),
        hit("High tide is at noon in summer.", name="tides.md"),
        hit("The pilot boat waits at berth 4.", name="berths.md"),
        hit(
            "A licensed harbour guide boards every incoming ship beyond the breakwater and steers it "
            "safely to its berth.",
            name="guides.md",
        ),
        hit("Mention 1822.", name="Pilot handbook.pptx"),
    )
    crew.vector, crew.bm25 = LegScore(rank=1, score=0.52), LegScore(rank=1, score=1.05)
    tides.vector = LegScore(rank=2, score=0.06)  # no word in common, barely similar: not quoted
    berths.vector, berths.bm25 = LegScore(rank=3, score=0.03), LegScore(rank=2, score=0.2)  # a word in common
    guides.vector = LegScore(rank=4, score=0.31)  # no word in common, but a long text as similar: quoted
    # Both legs found the deck's title ("Pilot"): the note's own two words say nothing of it.
    notes.vector, notes.bm25 = LegScore(rank=5, score=0.48), LegScore(rank=3, score=0.3)
    answer = extractive_answer("who is the pilot?", [crew, tides, berths, guides, notes], max_passages=5)
    cited = [line.rsplit("[", 1)[1].split("]")[0] for line in answer.splitlines()[1:]]
    assert cited == ["1", "3", "4"]  # numbers stay the sources' positions
    notes.vector = None  # BM25's hit alone (the vector leg's candidates missed it): the same
    assert extractive_answer("who is the pilot?", [crew, notes]).count("[") == 1
    # A word BM25 matched through its Snowball stem ("regenerate" and "regeneration": "regener").
    first, regeneration = hit("Zebrafish fins grow back."), hit("Regeneration of cardiac muscle in adults.")
    first.vector, regeneration.bm25 = LegScore(rank=1, score=0.6), LegScore(rank=1, score=2.0)
    assert extractive_answer("How do zebrafish regenerate?", [first, regeneration]).count("[") == 2
    # The best passage is always quoted, whatever its evidence.
    assert extractive_answer("who?", [tides]).splitlines()[1].endswith("[1] (tides.md)")


def test_extractive_answer_without_hits_says_nothing_was_found() -> None:
    assert extractive_answer("anything", []) == NO_SOURCES_ANSWER


def test_key_sentences_prefers_matching_sentences_and_falls_back_to_the_opening() -> None:
    text = "First sentence here. Vectors are embeddings. Another line about nothing."
    assert key_sentences(text, {"embeddings"}) == "Vectors are embeddings."
    assert key_sentences(text, {"zebra"}) == "First sentence here."


def test_an_extractive_answer_quotes_the_sentence_whose_word_is_in_another_form() -> None:
    # "How long does it last?" is answered by "lasts about ten years", not by "the last dose": the
    # question's words match a sentence's whatever their inflection (last/lasts, bake/baked).
    vaccine = hit(
        "Immunity from the tetanus vaccine lasts about ten years. Most people feel fine afterwards. "
        "After a dirty wound, a booster is given if the last dose was more than five years ago."
    )
    assert "lasts about ten years" in extractive_answer("How long does it last?", [vaccine])
    bread = hit("Shape the dough gently. The loaf is baked at 250 degrees for twenty minutes.")
    quoted = extractive_answer("What temperature should I bake it at?", [bread]).splitlines()[1]
    assert quoted == "- The loaf is baked at 250 degrees for twenty minutes. [1] (doc.txt)"


@pytest.mark.parametrize(
    ("question", "text", "quoted"),
    [
        # German: umlauts and ß are letters (only ASCII ones were: "Kühlschrank" was "k" + "hlschrank").
        (
            "Wann prüft der Außendienst die Türdichtung?",
            "Wartung der Kühlschränke. Der Außendienst prüft die Türdichtung halbjährlich. Sonst nichts.",
            "Der Außendienst prüft die Türdichtung halbjährlich.",
        ),
        # French: an elided word (l'élève) matches the word (élève).
        (
            "Que doit présenter un élève ?",
            "Le règlement de l'école. L'élève doit présenter sa carte. Les parents sont invités.",
            "L'élève doit présenter sa carte.",
        ),
        # Typed without accents: folded as BM25 folds them (0027), on both sides (else only the opening,
        # or a sentence sharing "der" and "die", was quoted).
        (
            "Que presente un eleve ?",
            "Le règlement de l'école. L'élève présente sa carte. Les parents sont invités.",
            "L'élève présente sa carte.",
        ),
        (
            "Wann pruft der Aussendienst die Turdichtung?",
            "Wartung der Kühlschränke und die Reinigung. Der Außendienst prüft die Türdichtung halbjährlich.",
            "Der Außendienst prüft die Türdichtung halbjährlich.",
        ),
        # Hebrew and Arabic: no word was found in them, so the passage's opening (its title) was quoted.
        (
            "כמה ימי חופשה מגיעים לעובד?",
            "מדריך עובדים. כל עובד זכאי לעשרים ימי חופשה בשנה. יש להגיש בקשה מראש.",
            "כל עובד זכאי לעשרים ימי חופשה בשנה.",
        ),
        (
            "كم يوما إجازة سنوية للموظف؟",
            "دليل الموظفين\n\nيحق لكل موظف إجازة سنوية مدتها واحد وعشرون يوما. يجب تقديم الطلب قبل أسبوعين.",
            "يحق لكل موظف إجازة سنوية مدتها واحد وعشرون يوما.",
        ),
        # Japanese, Chinese: sentences end at 。 with no space, words are not spaced: pairs of characters.
        (
            "会議室は予約制ですか？",
            "社内ガイド\n\n東京本社の会議室は予約制です。富士山の写真は受付に飾られています。",
            "東京本社の会議室は予約制です。",
        ),
        (
            "请假申请要提前多久？",
            "公司的年假政策规定每位员工每年享有十五天带薪年假。请假申请需要提前两周提交给人力资源部门。",
            "请假申请需要提前两周提交给人力资源部门。",
        ),
    ],
)
def test_the_sentence_answering_a_question_not_in_english_is_quoted(
    question: str, text: str, quoted: str
) -> None:
    assert key_sentences(text, topic_terms(question), max_sentences=1) == quoted


def test_a_number_after_a_hyphen_is_a_word_of_its_own_as_bm25_reads_it() -> None:
    # BM25 finds "2024" in "FY-2024" and "19" in "COVID-19" (migration 0028); the extractive answer read
    # "fy-2024" as one word, so the sentence BM25 found by the year was not the one quoted.
    text = "The FY-2023 budget was flat. The FY-2024 budget grew by a tenth."
    assert key_sentences(text, topic_terms("What was the 2024 budget?"), max_sentences=1) == (
        "The FY-2024 budget grew by a tenth."
    )
    assert topic_terms("COVID-19 and state-of-the-art") == {"covid", "19", "state-of-the-art"}


def test_english_apostrophes_read_as_before_any_script_was() -> None:
    # A typographic apostrophe (Word, PDF, phones) is an apostrophe: "employee’s" meets "employees".
    text = "Contractors are paid weekly. Each employee’s salary is paid monthly."
    assert key_sentences(text, topic_terms("When are employees paid?"), max_sentences=1) == (
        "Each employee’s salary is paid monthly."
    )
    # English contractions are words, not French elisions: no "re", "ll" or "ve" to match "Re:" lines.
    assert topic_terms("Are they're and we'll and you've kept whole?") == {
        "they're",
        "we'll",
        "you've",
        "kept",
        "whole",
    }
    assert {"élève", "hygiène"} <= topic_terms("L’élève d'hygiène")


def test_a_passage_after_the_first_bears_on_a_hebrew_question_by_its_words() -> None:
    """Without a word of the question, a later passage is dropped unless its vector score is high."""
    first, second = hit("מדיניות חופשות לעובדים."), hit("בקשה לחופשה מוגשת שבועיים מראש.", name="b.txt")
    second = second.model_copy(
        update={"vector": LegScore(rank=2, score=0.01), "bm25": LegScore(rank=1, score=1)}
    )
    answer = extractive_answer("מתי מגישים בקשה לחופשה?", [first, second])
    assert "[2] (b.txt)" in answer


def test_sources_are_numbered_from_one_with_whole_passages_as_excerpts() -> None:
    passage = "A chunk of some length, the answer at its end. " * 14 + "The answer is 42."
    sources = sources_from_hits([*HITS[:2], hit(passage), hit("word " * 1000)])
    assert [s.n for s in sources] == [1, 2, 3, 4]
    assert sources[0].page == 3 and sources[0].document_name == "doc.txt"
    assert sources[2].excerpt == passage  # 675 characters: whole
    assert len(sources[3].excerpt) <= EXCERPT_CHARS and sources[3].excerpt.endswith("…")


def test_fallback_title_cuts_at_a_word_boundary() -> None:
    assert fallback_title("  short   question ") == "short question"
    title = fallback_title("a very long question " * 10)
    assert len(title) <= 60 and title.endswith("…") and not title[:-1].endswith(" ")


def test_answer_prompt_numbers_sources_and_keeps_history() -> None:
    history = [
        ChatMessageOut(id=1, role="user", content="earlier question", created_at=NOW),
        ChatMessageOut(id=2, role="assistant", content="earlier answer", created_at=NOW),
    ]
    messages = answer_messages("new question", HITS[:2], history)
    assert messages[0].role.value == "system"
    assert "[1] (doc.txt, page 3)" in (messages[0].content or "")
    assert "[2] (bm25.md)" in (messages[0].content or "")
    assert [m.role.value for m in messages[1:]] == ["user", "assistant", "user"]
    assert messages[-1].content == "new question"


def test_an_odd_history_window_still_starts_the_prompt_with_a_question() -> None:
    # RAG_CHAT_HISTORY_MESSAGES=5 cuts a session's history after an answer: its first message is one.
    said = [("assistant", "old answer"), ("user", "q1"), ("assistant", "a1"), ("user", "q2")]
    history = [ChatMessageOut(id=i, role=r, content=c, created_at=NOW) for i, (r, c) in enumerate(said)]
    messages = answer_messages("q3", HITS[:1], history)
    assert [(m.role.value, m.content) for m in messages[1:]] == [
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2\n\nq3"),  # q2 was never answered: it goes with the question
    ]


def test_a_conversation_is_cut_to_the_models_context_oldest_first() -> None:
    said = [("user", "word " * 3000), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")]
    history = [ChatMessageOut(id=i, role=r, content=c, created_at=NOW) for i, (r, c) in enumerate(said)]
    cut = answer_messages("q3", HITS[:1], history, context_tokens=2048)
    # The pasted text goes, and with it its answer (a conversation starts with a question).
    assert [(m.role.value, m.content) for m in cut[1:]] == [
        ("user", "q2"),
        ("assistant", "a2"),
        ("user", "q3"),
    ]
    assert len(answer_messages("q3", HITS[:1], history, context_tokens=8192)) == 6  # all fits: all kept
    assert len(answer_messages("q3", HITS[:1], history)) == 6  # no context given: no cut


def test_earlier_answers_reach_the_llm_without_their_citation_numbers() -> None:
    # An earlier answer's [2] named that turn's second source; this turn's [2] is another passage. Left
    # in the history, the model repeated "[2]" with the fact and the reader was shown the wrong passage.
    said = [("user", "q1"), ("assistant", "Ten years [2], then a booster [1, 3]. See [a] too.")]
    history = [ChatMessageOut(id=i, role=r, content=c, created_at=NOW) for i, (r, c) in enumerate(said)]
    messages = answer_messages("q2", HITS[:2], history)
    assert messages[2].content == "Ten years, then a booster. See [a] too."
    assert "[1] (doc.txt, page 3)" in (messages[0].content or "")  # this turn's sources keep theirs


def test_sources_are_kept_best_first_while_they_fit_the_models_context() -> None:
    long = [hit(f"Passage {i}. " + "word " * 300) for i in range(6)]
    kept = fitting_sources(long, "q", context_tokens=1024)  # 768 for the prompt: two of ~300 tokens
    assert kept == 2
    assert fitting_sources(long, "q", context_tokens=8192) == 6
    assert fitting_sources(long, "q", context_tokens=None) == 6
    # One is always given, even when it alone is too long: the provider says whether it fits.
    assert fitting_sources([hit("word " * 5000)], "q", context_tokens=1024) == 1
    assert fitting_sources([], "q", context_tokens=1024) == 0


def test_a_callers_instructions_sit_between_the_rules_and_the_sources_and_take_a_quarter_at_most() -> None:
    plain = answer_messages("q", HITS[:1], [])[0].content or ""
    assert "guessing.\n\nSources:\n[1]" in plain  # none: the prompt as it always was
    told = answer_messages("q", HITS[:1], [], instructions="  Answer in French.  ")[0].content or ""
    assert "guessing.\n\nThe application asking adds these instructions." in told
    assert told.index("Answer in French.") < told.index("Sources:\n[1]")
    # Cut to a quarter of the model's context, so they never push every source out.
    long = "Be precise. " * 2000
    assert count_tokens(fitting_instructions(long, 1024)) == 256
    assert fitting_instructions("Be brief.", 1024) == "Be brief."
    assert fitting_instructions(long, None) == long
    # Megabytes of system messages are cut by characters before they are counted (the event loop waits).
    huge = "Be precise about every number and name you quote. " * 100_000
    assert count_tokens(fitting_instructions(huge, 1024)) == 256
    few_long_tokens = fitting_instructions(" " * 100_000, 1024)  # whatever a token's length, the cut holds
    assert count_tokens(few_long_tokens) <= 256 and len(few_long_tokens) <= 256 * 16
    assert fitting_sources([hit("word " * 300)] * 3, "q", 1024, fitting_instructions(long, 1024)) == 1


def test_the_fake_llm_tells_an_answer_whose_sources_say_title_from_a_title_request() -> None:
    # The fake must answer each prompt as the kind it is, or a test of answers gets a title back.
    sources = [hit("The title of the report is Harbour Safety.")]
    messages = answer_messages("who?", sources, [])
    answer = {"messages": [{"role": m.role.value, "content": m.content} for m in messages]}
    title = {"messages": [{"role": "system", "content": TITLE_SYSTEM_PROMPT}]}
    assert (request_kind(answer), request_kind(title)) == ("answer", "title")


def test_llm_settings_are_validated() -> None:
    assert configured_llm(Settings(llm_provider="none")) == (None, None)
    with pytest.raises(LLMConfigError):
        build_llm(Settings(llm_provider="openai", llm_model=None))


# --- against the fake OpenAI-compatible server ---------------------------------------------------------


@pytest.fixture
def fake(fake_llm: FakeLLM) -> FakeLLM:
    fake_llm.reset()
    return fake_llm


def llm_settings(fake: FakeLLM, timeout_s: float = 30.0) -> Settings:
    return Settings(
        llm_provider="openai",
        llm_base_url=fake.base_url,
        llm_model="fake-model",
        llm_timeout_s=timeout_s,
        llm_max_retries=0,
    )


async def test_stream_yields_tokens_from_sse_chunks(fake: FakeLLM) -> None:
    llm = build_llm(llm_settings(fake))
    pieces = [p async for p in stream(llm, answer_messages("what is HNSW?", HITS, []), 30)]
    assert len(pieces) > 3
    assert "".join(pieces) == "According to the sources, the answer to 'what is HNSW?' is grounded [1]."
    assert fake.requests[-1]["stream"] is True
    assert fake.requests[-1]["model"] == "fake-model"


async def test_condense_and_title_use_plain_completions(fake: FakeLLM) -> None:
    llm = build_llm(llm_settings(fake))
    history = [ChatMessageOut(id=1, role="user", content="tell me about HNSW", created_at=NOW)]
    assert (
        await condense_question(llm, "and its parameters?", history, 30) == "Standalone: and its parameters?"
    )
    assert await condense_question(llm, "no history", [], 30) == "no history"  # no LLM call
    assert await llm_title(llm, "what is HNSW?", 30) == TITLE
    assert fake.kinds() == ["condense", "title"]


async def test_http_errors_become_llm_failures_with_a_readable_sentence(fake: FakeLLM) -> None:
    fake.behaviour = Behaviour(fail_status=500)
    llm = build_llm(llm_settings(fake))
    with pytest.raises(LLMFailure, match=r"The LLM \(fake-model\) failed .*extractive answer"):
        await complete(llm, answer_messages("q", HITS, []), 30)
    with pytest.raises(LLMFailure, match="InternalServerError"):
        async for _ in stream(llm, answer_messages("q", HITS, []), 30):
            pass


async def test_slow_llm_times_out(fake: FakeLLM) -> None:
    fake.behaviour = Behaviour(delay_s=5)
    llm = build_llm(llm_settings(fake, timeout_s=0.5))
    with pytest.raises(LLMFailure, match=r"did not respond within 0\.5 s"):
        await complete(llm, answer_messages("q", HITS, []), 0.5)


async def test_a_stream_stalling_mid_answer_times_out(fake: FakeLLM) -> None:
    fake.behaviour = Behaviour(hang_after_tokens=2)
    llm = build_llm(llm_settings(fake, timeout_s=0.5))
    pieces: list[str] = []
    with pytest.raises(LLMFailure, match="did not respond"):
        async for piece in stream(llm, answer_messages("q", HITS, []), 0.5):
            pieces.append(piece)
    assert len(pieces) == 2
    fake.wait_for_aborted(1)  # our side closed the HTTP stream


async def test_closing_the_stream_between_tokens_closes_the_http_stream(fake: FakeLLM) -> None:
    """A client that left while a token was being written closes our stream at its `yield`. LlamaIndex's
    stream and the openai package's under it were then left to garbage collection: the provider went on
    generating for nobody."""
    fake.behaviour = Behaviour(hang_after_tokens=2)
    llm = build_llm(llm_settings(fake))
    tokens = stream(llm, answer_messages("q", HITS, []), 30)
    gc.disable()
    try:
        assert [await anext(tokens), await anext(tokens)]
        await tokens.aclose()
        fake.wait_for_aborted(1, timeout=10)  # blocks the loop: closed by aclose itself
    finally:
        gc.enable()


async def test_a_dropped_stream_is_a_failure(fake: FakeLLM) -> None:
    fake.behaviour = Behaviour(drop_after_tokens=3)
    llm = build_llm(llm_settings(fake))
    with pytest.raises(LLMFailure):
        async for _ in stream(llm, answer_messages("q", HITS, []), 30):
            pass


async def test_unreachable_llm_is_a_failure() -> None:
    settings = Settings(
        llm_provider="openai", llm_base_url="http://127.0.0.1:9/v1", llm_model="m", llm_max_retries=0
    )
    with pytest.raises(LLMFailure, match="APIConnectionError"):
        await complete(build_llm(settings), answer_messages("q", HITS, []), 30)


def test_key_sentences_keep_headings_and_list_items_apart_and_drop_their_markers() -> None:
    text = (
        "# Lighthouses\n\nA Fresnel lens focuses the beam.\nIt was designed in 1822.\n\n"
        "- beams rotate\n- lamps"
    )
    assert key_sentences(text, {"fresnel", "lens"}) == "A Fresnel lens focuses the beam."
    # A heading labels the passage (its heading path goes with the citation); it is not an answer.
    assert key_sentences(text, {"lighthouses"}) == "A Fresnel lens focuses the beam."
    guide = "## Install\n\n### Linux\n\nRun the installer with --quiet on Linux hosts."
    assert key_sentences(guide, {"install", "linux"}) == "Run the installer with --quiet on Linux hosts."
    assert key_sentences("# Only a heading", {"zebra"}) == "Only a heading"
    assert key_sentences(text, {"rotate"}) == "beams rotate"
    # Hard-wrapped lines of one paragraph are still one sentence.
    assert key_sentences("A lens focuses\nthe beam far.", {"lens"}) == "A lens focuses the beam far."


def test_a_heading_without_a_marker_is_not_quoted_as_part_of_a_sentence() -> None:
    # A Word heading or a slide's title is a line of its own in the text, and the passage's heading path:
    # "Optics The Fresnel lens beam turns once a minute." ran the title into the sentence below it.
    slide = hit("Optics\nThe Fresnel lens beam turns once a minute.", name="deck.pptx")
    slide.heading_path = "Optics"
    answer = extractive_answer("How far is the beam seen?", [slide])
    assert answer.splitlines()[1] == "- The Fresnel lens beam turns once a minute. [1] (deck.pptx)"
    guide = "Install\nRun the installer with\n--quiet on Linux hosts.\nUse\nStart it."
    assert key_sentences(guide, {"linux"}, headings=frozenset({"Install"})) == (
        "Run the installer with --quiet on Linux hosts."
    )
    # Without its heading path, a line is a wrapped line of the paragraph (plain text wraps so).
    assert key_sentences("Install\nRun it on Linux.", {"linux"}) == "Install Run it on Linux."


@pytest.mark.parametrize("context", range(4080, 4100, 4))
def test_instructions_cut_inside_a_character_keep_no_half_of_it(context: int) -> None:
    # A Chinese character or an emoji is several tokens: a cut between them sent the LLM a U+FFFD.
    cut = fitting_instructions("请用中文回答，并且简洁。\U0001f600" * 400, context)
    assert "\ufffd" not in cut
    assert count_tokens(cut) <= context // 4 and cut
