"""The prompts an LLM gets: the answer's (the numbered sources, the conversation cut to the model's
context, the question), the follow-up condense step's and the title's."""

from __future__ import annotations

from collections.abc import Sequence

from llama_index.core.llms import ChatMessage, MessageRole

from rag_server.chat.citations import without_citations
from rag_server.chat.models import ChatMessageOut
from rag_server.infra.tokenizer import count_tokens, encoding
from rag_server.retrieval.models import SearchHit

ANSWER_SYSTEM_PROMPT = """You answer questions using only the numbered sources below.
Cite every source you use inline with its number in square brackets, like [1] or [2][3].
If the sources do not contain the answer, say so briefly instead of guessing.
{instructions}
Sources:
{sources}"""

# A caller's own system prompt (an OpenAI client's system or developer messages, the Responses API's
# `instructions`): its language, tone or format reach the answer, under the rules above, which it cannot
# lift (it comes from whoever sends the question, who could write the same in the question anyway).
CALLER_INSTRUCTIONS = """
The application asking adds these instructions. Follow them where they agree with the rules above:
{text}
"""
# The most of a model's context a caller's instructions take (the rest is sources, conversation, answer).
INSTRUCTIONS_SHARE = 4

CONDENSE_SYSTEM_PROMPT = (
    "Rewrite the user's follow-up question as one standalone question that can be understood "
    "without the conversation. Reply with the standalone question only."
)

TITLE_SYSTEM_PROMPT = (
    "Write a short title (at most 6 words) for a conversation that starts with the user's question. "
    "Reply with the title only, without quotes."
)


def answer_system_prompt(sources: str, instructions: str = "") -> str:
    text = instructions.strip()
    extra = CALLER_INSTRUCTIONS.format(text=text) if text else ""
    return ANSWER_SYSTEM_PROMPT.format(sources=sources, instructions=extra)


def fitting_instructions(instructions: str, context_tokens: int | None) -> str:
    """The caller's instructions, cut to a quarter of the model's context (None: no limit)."""
    if context_tokens is None or not instructions:
        return instructions
    limit = context_tokens // INSTRUCTIONS_SHARE
    # Cut by characters first: a token is rarely over a few characters, and encoding megabytes of system
    # messages (a request may hold 2,048 of 20,000 characters each) would hold the event loop for seconds.
    head = instructions[: limit * 16]
    tokens = encoding().encode(head, allowed_special="all")
    if len(tokens) <= limit:
        return head
    # A character of several tokens (CJK, an emoji) cut in two: its bytes left out, not a U+FFFD.
    return encoding().decode_bytes(tokens[:limit]).decode("utf-8", errors="ignore")


def format_sources(hits: Sequence[SearchHit]) -> str:
    blocks = [_source_block(n, hit) for n, hit in enumerate(hits, start=1)]
    return "\n\n".join(blocks) if blocks else "(no sources were found)"


def _source_block(n: int, hit: SearchHit) -> str:
    where = hit_place(hit, "page") + (f"; {hit.heading_path}" if hit.heading_path else "")
    return f"[{n}] ({where})\n{hit.text.strip()}"


# Room kept for the answer in the model's context (a quarter of a small one) when a prompt is fitted.
ANSWER_RESERVE_TOKENS = 1024
# What each message adds to the prompt beyond its text (role, separators), roughly.
_MESSAGE_TOKENS = 4


def _prompt_budget(context_tokens: int, *prompt: str) -> int:
    """What is left of the model's context for the rest of a prompt beside these texts, with room kept
    for the answer."""
    budget = context_tokens - min(ANSWER_RESERVE_TOKENS, context_tokens // 4)
    return budget - sum(count_tokens(text) + _MESSAGE_TOKENS for text in prompt)


def fitting_sources(
    hits: Sequence[SearchHit], question: str, context_tokens: int | None, instructions: str = ""
) -> int:
    """How many of `hits` (best first) the answer prompt can hold beside the question, with room for the
    answer: at least one (whether that one fits is the provider's to say). The conversation gets what
    they leave (`fitting_history`). None: no limit."""
    if context_tokens is None:
        return len(hits)
    budget = _prompt_budget(context_tokens, answer_system_prompt("", instructions), question)
    for kept, hit in enumerate(hits):
        budget -= count_tokens(_source_block(kept + 1, hit)) + 1  # the blank line between two
        if budget < 0:
            return max(kept, 1)
    return len(hits)


def fitting_history(
    history: Sequence[ChatMessageOut], context_tokens: int | None, *prompt: str
) -> list[ChatMessageOut]:
    """The newest messages of `history` that fit in the model's context with the rest of the `prompt`
    (its other texts) and room for the answer; the oldest go first. None: no limit."""
    if context_tokens is None:
        return list(history)
    budget = _prompt_budget(context_tokens, *prompt)
    kept: list[ChatMessageOut] = []
    for message in reversed(history):
        budget -= count_tokens(message.content) + _MESSAGE_TOKENS
        if budget < 0:
            break
        kept.append(message)
    return kept[::-1]


def answer_messages(
    question: str,
    hits: Sequence[SearchHit],
    history: Sequence[ChatMessageOut],
    context_tokens: int | None = None,
    instructions: str = "",
) -> list[ChatMessage]:
    """The answer prompt: the rules, the caller's `instructions` (already cut: fitting_instructions), the
    sources, the conversation (its newest messages that fit `context_tokens`, the model's context) and
    the question."""
    system = answer_system_prompt(format_sources(hits), instructions)
    history = fitting_history(history, context_tokens, system, question)
    # An earlier answer's [n] named that turn's sources: the model would repeat it for another passage.
    said = [(m.role, without_citations(m.content) if m.role == "assistant" else m.content) for m in history]
    turns = [(role, text) for role, text in said if role != "system" and text.strip()]
    return [
        ChatMessage(role=MessageRole.SYSTEM, content=system),
        *(ChatMessage(role=MessageRole(role), content=text) for role, text in _alternating(turns, question)),
    ]


def _alternating(turns: Sequence[tuple[str, str]], question: str) -> list[tuple[str, str]]:
    """The conversation as user/assistant turns that alternate from a user's and end with the question:
    many models' chat templates (Mistral, Llama 2, Gemma, as vLLM or llama.cpp serve them) refuse any
    other order, and a caller-held conversation may start with a chat UI's greeting or hold a question
    sent twice. A leading assistant message is left out; messages of one role in a row are joined."""
    merged: list[tuple[str, str]] = []
    for role, text in [*turns, ("user", question)]:
        if not merged and role == "assistant":
            continue
        if merged and merged[-1][0] == role:
            merged[-1] = (role, f"{merged[-1][1]}\n\n{text}")
        else:
            merged.append((role, text))
    return merged


def condense_messages(
    question: str, history: Sequence[ChatMessageOut], context_tokens: int | None = None
) -> list[ChatMessage]:
    history = fitting_history(history, context_tokens, CONDENSE_SYSTEM_PROMPT, question)
    transcript = "\n".join(f"{m.role.capitalize()}: {m.content}" for m in history if m.role != "system")
    return [
        ChatMessage(role=MessageRole.SYSTEM, content=CONDENSE_SYSTEM_PROMPT),
        ChatMessage(
            role=MessageRole.USER,
            content=f"Conversation:\n{transcript}\n\nFollow-up question: {question}\n\nStandalone question:",
        ),
    ]


def hit_place(hit: SearchHit, page_word: str) -> str:
    """The document and the place in it: a slide or sheet rows when known, else the page."""
    if hit.location is not None and hit.location.label:
        return f"{hit.document_name}, {hit.location.label}"
    return hit.document_name + (f", {page_word} {hit.page}" if hit.page is not None else "")
