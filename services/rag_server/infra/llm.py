"""The optional chat LLM, built once per Runtime from settings through LlamaIndex's LLM classes.

`llm_provider=none` (the default) means no LLM: chat answers are extractive. Building an LLM never
contacts the provider, so a wrong URL shows up as an `llm_error` on the first answer, not at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag_server.config import Settings

if TYPE_CHECKING:  # seconds to import: every CLI command imports this module, few build an LLM
    from llama_index.core.llms import LLM


class LLMConfigError(ValueError):
    """The LLM settings are incomplete (e.g. a provider without a model)."""


def llm_configured(settings: Settings) -> bool:
    return settings.llm_provider != "none"


def configured_llm(settings: Settings) -> tuple[LLM | None, str | None]:
    """(the LLM for these settings or None, why it could not be built): never raises.

    Incomplete settings must not stop the server: chat answers extractively and says why.
    """
    if not llm_configured(settings):
        return None, None
    try:
        return build_llm(settings), None
    except Exception as exc:
        return None, f"The LLM is misconfigured ({exc}); showing the extractive answer."


def build_llm(settings: Settings) -> LLM:
    if not settings.llm_model:
        raise LLMConfigError(f"RAG_LLM_MODEL is required when RAG_LLM_PROVIDER={settings.llm_provider}")
    if settings.llm_provider == "ollama":
        from llama_index.llms.ollama import Ollama

        return Ollama(
            model=settings.llm_model,
            base_url=settings.llm_base_url or "http://localhost:11434",
            request_timeout=settings.llm_timeout_s,
            temperature=settings.llm_temperature,
            # A fixed window: with the default (-1) the client asks the server, a blocking HTTP call.
            context_window=settings.llm_context_tokens,
        )
    if settings.llm_provider == "openai":
        # The openai package imports its chat resources lazily, on the first request: import them now so
        # that first request does not spend its llm_timeout_s importing (seconds on a busy machine).
        import openai.resources.chat.completions  # noqa: F401
        from llama_index.llms.openai_like import OpenAILike

        # OpenAILike, not OpenAI: it accepts any model name (vLLM, LM Studio, llama.cpp, OpenRouter...)
        # and does not look the name up in OpenAI's own model table.
        return OpenAILike(
            model=settings.llm_model,
            api_base=settings.llm_base_url or "https://api.openai.com/v1",
            # Local OpenAI-compatible servers usually ignore the key, but the client insists on one.
            api_key=settings.llm_api_key or "not-needed",
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
            temperature=settings.llm_temperature,
            is_chat_model=True,
            context_window=settings.llm_context_tokens,
            # Streams end with a usage chunk (LlamaIndex drops this option from non-streamed calls):
            # /v1/chat/completions reports the provider's token counts, never estimates.
            additional_kwargs={"stream_options": {"include_usage": True}},
        )
    raise LLMConfigError(f"unknown RAG_LLM_PROVIDER {settings.llm_provider!r}")


def call_options(
    llm: LLM, *, temperature: float | None, max_tokens: int | None, stop: list[str] | None
) -> dict[str, Any]:
    """Per-call options for `llm.astream_chat(..., **options)`, as far as this LLM takes them.

    LlamaIndex's OpenAI classes pass keyword arguments through to the provider's request; Ollama's do not
    (they would be an error there), so it answers with its configured options.
    """
    from llama_index.llms.openai import OpenAI

    if not isinstance(llm, OpenAI):
        return {}
    options: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, "stop": stop}
    return {name: value for name, value in options.items() if value is not None}


def reports_finish(llm: LLM) -> bool:
    """Whether this LLM's streams end each answer with a finish reason (OpenAI's protocol: `stop`,
    `length`...), so that one closed without it was cut short."""
    from llama_index.llms.openai import OpenAI

    return isinstance(llm, OpenAI)
