"""Which questions read as follow-ups (chat/sources.leans_on_earlier): only those are searched again with
the question before them when they find nothing alone and no LLM made them standalone."""

from __future__ import annotations

import pytest

from rag_server.chat.sources import leans_on_earlier


@pytest.mark.parametrize(
    "question",
    [
        "Is that the same for part-timers?",
        "How long does it last?",
        "And the other kind?",
        "What about children?",
        "Why?",
        "Children?",
        "Can they be renewed?",
        "什么时候?",  # no word this rule can read: taken as a follow-up, as before it existed
    ],
)
def test_a_question_that_refers_back_or_names_at_most_one_thing_is_a_follow_up(question: str) -> None:
    assert leans_on_earlier(question)


@pytest.mark.parametrize(
    "question",
    [
        "Who won the football world cup in 2014?",
        "What is the capital of Mongolia?",
        "How do I feed my dog?",
        "Does the vaccine hurt?",
        "Android phone battery",  # "and" only at a word's start is no opening
    ],
)
def test_a_question_that_names_its_own_subject_is_not(question: str) -> None:
    assert not leans_on_earlier(question)
