"""A conversation as a Markdown file: its questions, answers and each answer's numbered sources (where
the passage sits and its excerpt), so an answer can be shared or kept with what it cites. `transcript`
reads the conversation, its reference resolved once."""

from __future__ import annotations

import re

from rag_server.chat.models import ChatMessageOut, ChatSession, SessionRef, Source
from rag_server.chat.service import ChatService
from rag_server.infra.scoped_pool import ScopedPool

EXCERPT_CHARS = 400
_UNSAFE_IN_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_HEADING = re.compile(r"^( {0,3})(#{1,6})(?=\s|$)")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)\s*$")


async def transcript(
    chat: ChatService, ref: SessionRef, reads: ScopedPool | None = None
) -> tuple[ChatSession, list[ChatMessageOut]]:
    """The session and its messages in order, the reference resolved once."""
    store, session_id = await chat.locate(ref, reads)
    return await store.get(session_id), await store.history(session_id)


def export_filename(session: ChatSession) -> str:
    """`<title>.md`, the title made safe as a file name on every system (else `chat-<id>.md`)."""
    name = " ".join(_UNSAFE_IN_NAME.sub(" ", session.title or "").split()).strip(".")[:100].strip()
    return f"{name or f'chat-{session.id}'}.md"


def markdown(session: ChatSession, messages: list[ChatMessageOut]) -> str:
    lines = [f"# {session.title or 'Untitled chat'}", ""]
    asked = sum(m.role == "user" for m in messages)
    lines.append(f"{session.created_at:%Y-%m-%d %H:%M} UTC · {asked} question{'' if asked == 1 else 's'}")
    for message in messages:
        if message.role == "user":
            lines += ["", "## Question", "", _nested(message.content)]
            continue
        mode = message.metadata.get("answer_mode")
        lines += [
            "",
            "## Answer"
            + (" (quoted from the sources: no LLM)" if mode == "extractive" and message.sources else ""),
            "",
        ]
        lines.append(_nested(message.content))
        if message.sources:
            lines += ["", "Sources:", ""]
            lines += [line for source in message.sources for line in _source(source)]
    return "\n".join(lines) + "\n"


def _nested(text: str) -> str:
    """A question's or answer's Markdown under its "## Question"/"## Answer": its headings two levels
    deeper, and a line that would underline the one before it as a heading set apart, so no text can
    start a section of the export ("## Answer" in a question made a second answer). Code is kept."""
    out: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        if (opened := _FENCE.match(line)) is not None:
            marker = opened.group(1)
            fence = marker if fence is None else None if marker.startswith(fence) else fence
        elif fence is None:
            if _SETEXT_UNDERLINE.match(line) and out and out[-1].strip():
                out.append("")
            line = _HEADING.sub(lambda m: m.group(1) + "#" * min(len(m.group(2)) + 2, 6), line)
        out.append(line)
    return "\n".join(out)


def _source(source: Source) -> list[str]:
    place = [source.location.label] if source.location else [f"page {source.page}"] if source.page else []
    if source.heading_path:
        place.append(source.heading_path)
    note = (
        " (document deleted since)"
        if source.document_deleted
        else " (an earlier version)"
        if source.stale
        else ""
    )
    head = f"{source.n}. **{source.document_name}**" + "".join(f", {p}" for p in place) + note
    excerpt = " ".join(source.excerpt.split())
    if len(excerpt) > EXCERPT_CHARS:
        excerpt = excerpt[:EXCERPT_CHARS].rstrip() + "…"
    return [head, f"   > {excerpt}"]
