"""A read-only request whose client is gone stops: its handler is cancelled, and with it its statement.

Nothing stopped a request whose client had left: the web app's "Contains" box aborts a superseded
listing in the browser, but its chunk scan ran on to the end in PostgreSQL (0.1-0.2 s at 40k chunks, per
typing pause), and so did any search or listing a client gave up on. Here a request that may not write
(GET, HEAD, OPTIONS, `read_routing.READ_ONLY_POSTS`, a /v1/responses with `"store": false`) runs in
its own task while its `receive()` is watched: an `http.disconnect` before the response's last part
cancels that task, and asyncpg, cancelled while it awaits a statement, sends PostgreSQL a cancel request,
so the backend stops too.

A write is never cancelled this way (its outcome must not depend on the client staying): it runs as
before, in the request's task. So do streams that write (chat's SSE: Starlette stops its generator on a
disconnect, and the answer's final write is shielded, decision 0006).

A request cancelled before it answered is logged and counted as 499 (nginx's "client closed request"):
the status goes to the access line and the metrics outside, never to the client, whom uvicorn no longer
writes to. The body of a read-only request (a small JSON, bounded by BodyLimitMiddleware outside) is read
first; its handler then reads it again, and after it the disconnect, as Starlette's own streams expect.
"""

from __future__ import annotations

import asyncio
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_server.api.read_routing import request_messages, writes
from rag_server.infra.metrics import CLIENT_CLOSED

_FINAL = ("http.response.pathsend", "http.response.zerocopysend")


class CancelOnDisconnectMiddleware:
    """Runs a read-only request's handler in a task of its own, cancelled if its client disconnects
    before the response's end; any other request runs as it comes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        writing, receive = await writes(scope, receive)
        if writing:
            await self.app(scope, receive, send)
            return
        body = await request_messages(receive)
        if body[-1]["type"] == "http.disconnect":  # gone before it was read
            await _client_closed(send)
            return
        pending = deque(body)
        gone = asyncio.Event()
        started = ended = False

        async def receive_again() -> Message:
            if pending:
                return pending.popleft()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send_tracked(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] in _FINAL or (
                message["type"] == "http.response.body" and not message.get("more_body", False)
            ):
                ended = True
            await send(message)

        async def watch() -> None:
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # the server could not read the connection: it is gone as well
                pass
            gone.set()

        handler = asyncio.ensure_future(self.app(scope, receive_again, send_tracked))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait((handler, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not handler.done() and not ended:
                # The client left before the answer's end (uvicorn also reports a disconnect once a
                # response is complete: then the handler is let finish, its background work too).
                handler.cancel()
                await asyncio.wait((handler,))
                if handler.cancelled():
                    if not started:
                        await _client_closed(send)
                    return
            await handler  # its result, or its exception, as if it had run in this task
        except asyncio.CancelledError:
            # This request's own task was cancelled (a server's shutdown): its handler goes with it.
            handler.cancel()
            await asyncio.wait((handler,))
            raise
        finally:
            watcher.cancel()


async def _client_closed(send: Send) -> None:
    await send({"type": "http.response.start", "status": CLIENT_CLOSED, "headers": []})
    await send({"type": "http.response.body", "body": b""})
