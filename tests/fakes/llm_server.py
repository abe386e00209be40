"""A real local HTTP server speaking OpenAI's /v1/chat/completions (JSON and stream=true SSE chunks).

It runs aiohttp on its own event loop in a thread on 127.0.0.1:<free port>, so both in-process code
and a `rag-server serve` subprocess reach it over real sockets. Behaviour is switched per test through
`FakeLLM.behaviour`; every request body is recorded in `FakeLLM.requests`.

Which prompt a request is: a system message starting "Write a short title" -> a title (an answer's
system message holds the sources, which may say "title"); "standalone question" ->
a condense step; anything else -> an answer, which cites [1] and quotes the question.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TITLE = "Fake Conversation Title"


@dataclass
class Behaviour:
    fail_status: int | None = None  # answer every request with this HTTP error
    delay_s: float = 0.0  # wait before answering (timeouts)
    chunk_delay_s: float = 0.0  # wait between streamed chunks
    # After this many streamed tokens: keep the stream open with SSE comments until the client leaves.
    hang_after_tokens: int | None = None
    # With hang_after_tokens: the stream resumes once this is set (None: hang until the client leaves).
    release: threading.Event | None = None
    # After this many streamed tokens: drop the connection (a mid-stream failure).
    drop_after_tokens: int | None = None
    # After this many streamed tokens: end the stream as if complete ("data: [DONE]", the HTTP body
    # closed cleanly) but without a chunk giving its finish_reason (a provider's stream cut short).
    end_after_tokens: int | None = None
    # Only requests of these kinds misbehave (None = all): "answer", "condense", "title".
    affects: set[str] | None = None
    # Report token usage (`usage`; when streaming, only if asked with stream_options.include_usage).
    report_usage: bool = True
    # The reply to answer requests (None: the usual one, citing [1]), to title and condense requests.
    answer: str | None = None
    title: str | None = None
    condensed: str | None = None
    # Refuse (400) messages whose roles, after the system message, do not alternate user/assistant
    # starting with a user message: what vLLM or llama.cpp answer for a model whose chat template
    # insists on it (Mistral, Llama 2, Gemma...).
    alternating_roles: bool = False
    # Refuse (400, as vLLM words it) a prompt of more words than this: a model's context window, with
    # the fake's tokens (words, as usage_for counts them).
    context_tokens: int | None = None


@dataclass
class FakeLLM:
    behaviour: Behaviour = field(default_factory=Behaviour)
    requests: list[dict[str, Any]] = field(default_factory=list)
    aborted_streams: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def kinds(self) -> list[str]:
        return [request_kind(r) for r in self.requests]

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeLLM:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            # Like a real provider, a request whose client left is cancelled (the server under test
            # timed out or hung up): without it, a `delay_s` sleep outlived its client and `stop()`
            # waited for it (aiohttp waits up to shutdown_timeout, 60 s by default, for handlers).
            # The fake has nothing to flush, so stopping cancels whatever still runs after 1 s.
            runner = self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
            loop.run_until_complete(runner.setup())
            # Port 0: the kernel picks a free port at bind, so no other process can take it first.
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
            self.port = runner.addresses[0][1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-llm", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("fake LLM did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(30)

    def reset(self) -> None:
        self.behaviour = Behaviour()
        self.requests.clear()
        self.aborted_streams = 0

    def wait_for_aborted(self, count: int, timeout: float = 60) -> None:
        """Block until `count` streams were abandoned by their client (not a timed assertion)."""
        deadline = time.monotonic() + timeout
        while self.aborted_streams < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.aborted_streams} aborted streams, expected {count}")
            time.sleep(0.05)

    # --- the endpoint --------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        kind = request_kind(body)
        b = self.behaviour
        misbehave = b.affects is None or kind in b.affects
        if misbehave and b.delay_s:
            await asyncio.sleep(b.delay_s)
        if misbehave and b.fail_status is not None:
            return web.json_response(
                {"error": {"message": f"fake failure {b.fail_status}", "type": "server_error"}},
                status=b.fail_status,
            )
        words = usage_for(body, "")["prompt_tokens"]
        if b.context_tokens is not None and words > b.context_tokens:
            message = (
                f"This model's maximum context length is {b.context_tokens} tokens. However, your request "
                f"has {words} input tokens. Please reduce the length of the input messages."
            )
            return web.json_response({"error": {"message": message, "type": "BadRequestError"}}, status=400)
        roles = [m.get("role") for m in body.get("messages", []) if m.get("role") != "system"]
        if b.alternating_roles and roles != ["user", "assistant"] * (len(roles) // 2) + ["user"]:
            message = "Conversation roles must alternate user/assistant/user/assistant/..."
            return web.json_response({"error": {"message": message, "type": "BadRequestError"}}, status=400)
        given = {"answer": b.answer, "title": b.title, "condense": b.condensed}[kind]
        reply = reply_for(body) if given is None else given
        text, finish = cut_to_max_tokens(body, reply)
        model = body.get("model", "fake")
        usage = usage_for(body, text) if self.behaviour.report_usage else None
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
            )
        if not (body.get("stream_options") or {}).get("include_usage"):
            usage = None
        return await self._stream(request, text, finish, model, b if misbehave else Behaviour(), usage)

    async def _stream(
        self,
        request: web.Request,
        text: str,
        finish: str,
        model: str,
        b: Behaviour,
        usage: dict[str, int] | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        tokens = [w + " " for w in text.split(" ")]
        tokens[-1] = tokens[-1].rstrip()
        try:
            for i, token in enumerate(tokens):
                if b.drop_after_tokens is not None and i == b.drop_after_tokens:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if b.end_after_tokens is not None and i == b.end_after_tokens:
                    await response.write(b"data: [DONE]\n\n")
                    await response.write_eof()
                    return response
                if b.hang_after_tokens is not None and i == b.hang_after_tokens:
                    # SSE comments keep the stream alive; the writes fail once the client has gone.
                    while b.release is None or not b.release.is_set():
                        await response.write(b": keepalive\n\n")
                        await asyncio.sleep(0.05)
                await response.write(_chunk(model, {"role": "assistant", "content": token}, None))
                if b.chunk_delay_s:
                    await asyncio.sleep(b.chunk_delay_s)
            await response.write(_chunk(model, {}, finish))
            if usage is not None:  # OpenAI's usage chunk: no choices
                payload = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model}
                payload |= {"created": int(time.time()), "choices": [], "usage": usage}
                await response.write(f"data: {json.dumps(payload)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError, RuntimeError):
            self.aborted_streams += 1
        return response


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


def cut_to_max_tokens(body: dict[str, Any], reply: str) -> tuple[str, str]:
    """The reply and its finish reason: at most max_tokens words (the fake's tokens), then "length"."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    words = reply.split(" ")
    if isinstance(limit, int) and len(words) > limit:
        return " ".join(words[:limit]), "length"
    return reply, "stop"


def usage_for(body: dict[str, Any], reply: str) -> dict[str, int]:
    """Token counts the fake reports: words in, words out (what a test can recompute)."""
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion = len(reply.split(" "))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _system(body: dict[str, Any]) -> str:
    return " ".join(str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "system")


def _last_user(body: dict[str, Any]) -> str:
    users = [str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


def request_kind(body: dict[str, Any]) -> str:
    system = _system(body).lower()
    if system.startswith("write a short title"):
        return "title"
    if "standalone question" in system:
        return "condense"
    return "answer"


def reply_for(body: dict[str, Any]) -> str:
    kind = request_kind(body)
    if kind == "title":
        return TITLE
    if kind == "condense":
        follow_up = _last_user(body).split("Follow-up question:", 1)[-1].split("\n\n")[0].strip()
        return f"Standalone: {follow_up}"
    return f"According to the sources, the answer to '{_last_user(body)[:80]}' is grounded [1]."
