"""Token usage as the LLM reports it (OpenAI-compatible `usage`, Ollama's eval counts), summed over the
calls one answer makes. Never estimated: when the provider reports nothing, there is no usage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reported: bool = False  # some call reported usage (zeros included): else there is none to show

    def add(self, other: TokenUsage) -> None:
        self.reported = True
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens


def reported_usage(raw: Any) -> TokenUsage | None:
    """The usage in one raw provider response or stream chunk (LlamaIndex's `ChatResponse.raw`), if any.

    OpenAI-compatible servers put it in `usage` (in a stream: the last chunk, when asked with
    `stream_options.include_usage`; every other chunk has `usage: null`); Ollama in its final message.
    """
    usage = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
    if usage is not None:
        read = usage.get if isinstance(usage, dict) else lambda name: getattr(usage, name, None)
        prompt, completion = read("prompt_tokens"), read("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            total = read("total_tokens")
            return TokenUsage(prompt, completion, total if isinstance(total, int) else prompt + completion)
    if isinstance(raw, dict) and isinstance(raw.get("eval_count"), int):  # Ollama
        prompt = raw.get("prompt_eval_count")
        prompt = prompt if isinstance(prompt, int) else 0
        return TokenUsage(prompt, raw["eval_count"], prompt + raw["eval_count"])
    return None
