"""The API's side of read replicas (infra/replicas.py): what a request may have written, read-your-writes
positions after writes, and a read-only request run again on the primary when a replica failed under it.
"""

from __future__ import annotations

import json
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_server.infra.replicas import ReadAttempt, ReadRouting, read_attempt, reading_after
from rag_server.infra.scoped_pool import request_scope
from rag_server.read_after import READ_AFTER_HEADER, lsn_text, parse_lsn

# Requests that change nothing although their method is not a safe one (they read or compute only).
READ_ONLY_POSTS = frozenset(
    {
        "/search",
        "/documents/check-duplicates",
        "/v1/embeddings",
        "/v1/chat/completions",
        "/mcp",
    }
)
# POSTs that write only when their body says so: /v1/responses stores its response unless `"store": false`.
STORING_POSTS = frozenset({"/v1/responses"})


def may_write(method: str, path: str) -> bool:
    return method not in ("GET", "HEAD", "OPTIONS") and path.rstrip("/") not in READ_ONLY_POSTS


async def writes(scope: Scope, receive: Receive) -> tuple[bool, Receive]:
    """(whether the request may write, the receive to run it with). A STORING_POSTS request's body (a
    small JSON, bounded by BodyLimitMiddleware outside) is read to tell, then replayed to the app."""
    if not may_write(scope["method"], scope["path"]):
        return False, receive
    if scope["method"] != "POST" or scope["path"].rstrip("/") not in STORING_POSTS:
        return True, receive
    if (known := scope.get("state", {}).get(_STORES)) is not None:  # told by an outer middleware
        return known, receive
    body = await request_messages(receive)
    scope.setdefault("state", {})[_STORES] = stores = _stores(body)
    return stores, _replaying(body, receive)


_STORES = "rag_stores"


def _stores(body: list[Message]) -> bool:
    """False only for a JSON object with `"store": false` (a body that is not one is refused, unstored).
    Not parsed without a "store" key: a request (up to RAG_MAX_REQUEST_BYTES, before its key is checked)
    is parsed here once at most, and only when it may say so."""
    raw = b"".join(m.get("body", b"") for m in body if m["type"] == "http.request")
    if b'"store"' not in raw and b"\\u" not in raw:  # a key may be written with escapes: parse those
        return True
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return True
    return not (isinstance(data, dict) and data.get("store") is False)


class ReadRoutingMiddleware:
    """Two duties around every request of a server with replicas.

    After a request that may have written, remember the primary's position for its principal
    (ReadRouting.record_write) before the response goes out, so the client's next read goes to the
    primary or to a replica that has replayed the write. The position also goes back to the client in
    READ_AFTER_HEADER, for reads it sends to another server process. A streamed answer (chat) writes
    before its stream ends: it is recorded again then (its header holds the position at its start).

    A request that writes nothing and answered 503 because a read failed on a replica under it is run
    once more with every read on the primary: its 503 is never sent. Its body is read first to replay it
    (the read-only POSTs carry a small JSON body)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = getattr(scope.get("app"), "state", None) and getattr(scope["app"].state, "runtime", None)
        reads: ReadRouting | None = getattr(runtime, "reads", None)
        if scope["type"] != "http" or reads is None:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(READ_AFTER_HEADER.lower().encode())
        with reading_after(parse_lsn(header.decode("latin-1")) if header else 0):
            writing, receive = await writes(scope, receive)
            if writing:
                await self.app(scope, receive, self._recording(reads, send))
            else:
                await self._reading(scope, receive, send)

    async def _reading(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await request_messages(receive)
        for attempt in (ReadAttempt(), ReadAttempt(on_primary=True)):
            with read_attempt(attempt):
                # A copy of the scope each time: routing writes into it (a Mount extends root_path).
                held = await self._run_once(dict(scope), _replaying(body, receive), send, attempt)
            if not held:
                return

    async def _run_once(self, scope: Scope, receive: Receive, send: Send, attempt: ReadAttempt) -> bool:
        """Run the app; True when it answered 503 after a replica failed under it (nothing was sent)."""
        held = False

        async def send_unless_held(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                held = message["status"] == 503 and attempt.replica_failed and not attempt.on_primary
            if not held:
                await send(message)

        await self.app(scope, receive, send_unless_held)
        return held

    @staticmethod
    def _recording(reads: ReadRouting, send: Send) -> Send:
        streamed = False

        async def send_after_recording(message: Message) -> None:
            nonlocal streamed
            if message["type"] == "http.response.start" and message["status"] < 400:  # else nothing written
                lsn = await reads.record_write(request_scope())
                if lsn is not None:
                    header = (READ_AFTER_HEADER.lower().encode(), lsn_text(lsn).encode())
                    message = {**message, "headers": [*message.get("headers", []), header]}
            elif message["type"] == "http.response.body":
                if message.get("more_body", False):
                    streamed = True
                elif streamed:
                    await reads.record_write(request_scope())
            await send(message)

        return send_after_recording


async def request_messages(receive: Receive) -> list[Message]:
    """The request's body messages, up to the last one (a GET has one, empty), or a disconnect before it."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """The buffered body messages again, then the client's own (its disconnect, for a stream)."""
    pending = deque(messages)

    async def replay() -> Message:
        return pending.popleft() if pending else await receive()

    return replay
