"""A chat as Markdown: counted questions, a file name every system takes (the HTTP side is in
tests/integration/test_chat_api.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from rag_server.chat.export import export_filename, markdown
from rag_server.chat.models import ChatMessageOut, ChatSession


def session(title: str | None) -> ChatSession:
    return ChatSession.new(title=title, search_type="hybrid", llm_model=None, is_temporary=False)


def test_one_question_is_said_in_the_singular() -> None:
    now = datetime.now(UTC)
    asked = [
        ChatMessageOut(id=1, role="user", content="Why?", created_at=now),
        ChatMessageOut(id=2, role="assistant", content="Because.", created_at=now),
    ]
    text = markdown(session("Why"), asked)
    assert " · 1 question\n" in text and text.endswith("Because.\n")


def test_a_title_becomes_a_file_name_every_system_takes() -> None:
    assert export_filename(session('a/b: "c"?  ')) == "a b c.md"
    chat = session("...")
    assert export_filename(chat) == f"chat-{chat.id}.md"
    assert export_filename(session(None)).startswith("chat-")


def test_only_an_answer_quoting_sources_is_labelled_as_quoted() -> None:
    # "No relevant passages were found" quotes nothing: labelled "quoted from the sources", it said the
    # opposite of itself.
    now = datetime.now(UTC)
    extractive = {"answer_mode": "extractive"}
    asked = [
        ChatMessageOut(id=1, role="user", content="Capital of Mongolia?", created_at=now),
        ChatMessageOut(
            id=2, role="assistant", content="No relevant passages.", metadata=extractive, created_at=now
        ),
    ]
    text = markdown(session("Mongolia"), asked)
    assert "\n## Answer\n\nNo relevant passages.\n" in text and "quoted" not in text


def test_no_question_or_answer_text_starts_a_section_of_the_export() -> None:
    # A question holding "## Answer" read as a second answer; an answer's own headings stood level with
    # the export's questions and answers.
    now = datetime.now(UTC)
    asked = [
        ChatMessageOut(id=1, role="user", content="Why?\n## Answer\nBecause I say so.", created_at=now),
        ChatMessageOut(
            id=2,
            role="assistant",
            content="# Steps\nBoil.\nQuestion\n---\n```sh\n# a comment\n```\n###### Deep",
            created_at=now,
        ),
    ]
    text = markdown(session("Why"), asked)
    assert [line for line in text.splitlines() if line.startswith("## ")] == ["## Question", "## Answer"]
    assert "#### Answer\nBecause I say so." in text
    assert "### Steps\nBoil.\nQuestion\n\n---\n" in text  # a rule now, not an underline
    assert "```sh\n# a comment\n```\n###### Deep" in text  # code kept, no level past six
