"""A bound on a request's head (its request line and headers): MAX_HEAD_BYTES, before any of it is kept.

uvicorn reads HTTP with httptools (`uvicorn[standard]`), which keeps a request's line and headers whole,
however long, before the app sees a byte of them, and joins the pieces of a long URL or header value by
copying all that came before (quadratic). So anyone who could reach the port, with no key, made the API
process hold 300 MB of headers (0.3 -> 0.6 GB, never given back), or hold its event loop, and with it
every other request, for seconds with a 150 MB URL (13 s for /health/live). h11 has such a bound
(16 KiB); uvicorn gives httptools none. Here a head over the bound is a 431 with a JSON `detail`, the
connection closed, before the app runs (no key is checked: nothing of the request is kept).

A head is bounded in time too: HEAD_TIMEOUT_S from a connection's start, or from a request's first byte,
to its last header. uvicorn waited for ever on a connection that sent nothing, or half a head, so anyone
could hold the server's connections (and its open files: 20,000 here) with idle sockets until it could
accept no other. Half a head is answered 408, and the connection closed; one that sent nothing is closed.
So is a body: one that stops arriving while the server reads it (under BODY_MIN_BYTES in BODY_IDLE_S: a
head announcing 100 bytes, then 3 of them, held a connection for ever as well) is answered 408 and its
connection closed.

A request httptools cannot parse (a raw non-ASCII byte in its URL, a malformed header) is uvicorn's 400,
answered before the app runs; uvicorn writes it as plain text, here it is a JSON `detail` as every other
error of the API.
"""

from __future__ import annotations

import asyncio
import json
import logging

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

# Far beyond what a client sends (a key, a JSON match in a query string: 4,000 characters, 12 bytes
# each percent-encoded) and what proxies pass (nginx: 8 KiB a line, 32 KiB in all).
MAX_HEAD_BYTES = 64 * 1024

# How long a refused connection is read (and dropped) for its 431 or 400 to reach the client (see _refuse).
LINGER_S = 2.0

# From a connection's start, or a request's first byte, to the end of its headers: a client sends a head
# at once (nginx's client_header_timeout: 60 s; Apache's mod_reqtimeout: 20 to 40 s).
HEAD_TIMEOUT_S = 30.0

# Between two pieces of a request's body while the server reads it (a slow upload still sends something
# every second; one waiting for the server to read on, or for its 100 Continue, is not counted).
BODY_IDLE_S = 60.0
# ... and at least this much of it in each BODY_IDLE_S: a body trickled a byte every 59 s held its
# connection for as long as it liked (any real client, even on a poor link, sends far more).
BODY_MIN_BYTES = 1024

HEAD_TOO_LARGE = (
    f"The request's line and headers are over the limit of {MAX_HEAD_BYTES:,} bytes: send long values "
    "(a query, a filter) in a POST body."
)


def check_uvicorn() -> None:
    """RuntimeError unless the installed uvicorn has what this protocol reads of it: hooks it overrides,
    and attributes of its protocol, request cycle, flow control and server state read in the clocks'
    callbacks. A uvicorn without one (pyproject bounds it from below only) would raise there, in the
    event loop's log, and leave the connection open: the bounds gone without a word. At import, so
    `serve` and `up` stop at start."""
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    from uvicorn.server import ServerState

    hooks = [h for h in _HOOKS if not callable(getattr(HttpToolsProtocol, h, None))]
    uses = [
        (HttpToolsProtocol.__init__, {"loop", "server_state", "cycle", "pipeline"}),
        (HttpToolsProtocol.connection_made, {"transport", "flow"}),
        (
            RequestResponseCycle.__init__,
            {"response_started", "response_complete", "waiting_for_100_continue"},
        ),
        (FlowControl.__init__, {"read_paused"}),
        (ServerState.__init__, {"default_headers"}),
    ]
    attributes = sorted(
        n for f, names in uses for n in names - set(getattr(getattr(f, "__code__", None), "co_names", ()))
    )
    if hooks or attributes:
        raise RuntimeError(
            f"uvicorn {uvicorn.__version__} is not the uvicorn api/request_head.py was written for (no "
            f"{', '.join([*hooks, *attributes])}): install the uvicorn[standard] it was tested with (0.55), "
            "or adapt it."
        )


_HOOKS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_headers_complete",
    "on_message_complete",
    "on_response_complete",
    "send_400_response",
)

NOT_HTTP = (
    "The request is not valid HTTP/1.1 ({reason}): it could not be read. A URL holds "
    "ASCII only: percent-encode any other character (%C3%A9 for é)."
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, counting the bytes of each request's head as they arrive, and the
    time they take."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._head_bytes = 0
        self._in_head = True
        self._refused: tuple[int, str, str] | None = None  # a refusal: status, reason, detail
        self._heads = 0  # heads read whole on this connection
        self._head_clock: asyncio.TimerHandle | None = None
        self._body_clock: asyncio.TimerHandle | None = None
        self._body_window = 0  # bytes of the body since its clock started

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        self._stop_body_clock()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head_clock()

    def on_headers_complete(self) -> None:
        self._stop_head_clock()
        self._in_head = False
        self._heads += 1
        super().on_headers_complete()
        self._start_body_clock()  # stopped when the message ends: at once for a request without a body

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._stop_body_clock()
        self._in_head, self._head_bytes = True, 0  # a next request on the connection: its own head

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # what the client still sends after its 431 (see _refuse)
        if not self._in_head:
            self._body_window += len(data)
            if self._body_clock is not None and self._body_window >= BODY_MIN_BYTES:
                self._start_body_clock()  # enough of the body came: its clock starts again
            super().data_received(data)
            return
        room = MAX_HEAD_BYTES - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # The head may end inside what fits, its body (or the next request) after it: read up to the
        # bound and go on only if the head ended there. (A next request begun there counts from what
        # follows: its head is bounded all the same, by twice the bound at most.)
        self._head_bytes = MAX_HEAD_BYTES
        heads = self._heads
        if room > 0:
            super().data_received(data[:room])
        if self.transport.is_closing():
            return  # refused by the parser already (a malformed request: uvicorn's 400)
        if self._heads == heads:
            self._refuse()
            return
        self.data_received(data[room:])

    def _start_head_clock(self) -> None:
        self._stop_head_clock()
        self._head_clock = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _stop_head_clock(self) -> None:
        if self._head_clock is not None:
            self._head_clock.cancel()
            self._head_clock = None

    def _head_timed_out(self) -> None:
        self._head_clock = None
        if not self._in_head or self._refused or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._start_head_clock()  # an earlier request (pipelined) is still answered: not before it ends
            return
        if self._head_bytes == 0:
            # Nothing of a request came (a browser's spare connection, opened in case): closed quietly.
            logger.debug("a connection sent no request within %g s: closed", HEAD_TIMEOUT_S)
            self.transport.close()
            return
        logger.info("a request's line and headers did not arrive within %g s: 408, closed", HEAD_TIMEOUT_S)
        self._answer(
            408,
            "Request Timeout",
            f"The request's line and headers did not arrive within {HEAD_TIMEOUT_S:g} s of the connection "
            "or of the request's start.",
        )
        self.transport.close()

    def _start_body_clock(self) -> None:
        self._stop_body_clock()
        self._body_window = 0
        self._body_clock = self.loop.call_later(BODY_IDLE_S, self._body_stalled)

    def _stop_body_clock(self) -> None:
        if self._body_clock is not None:
            self._body_clock.cancel()
            self._body_clock = None

    def _body_stalled(self) -> None:
        self._body_clock = None
        cycle = self.cycle
        if self._in_head or cycle is None or self.transport.is_closing():
            return
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            self._start_body_clock()  # the server does not read on yet: the client is not the one waiting
            return
        logger.info("a request's body stopped arriving for %g s: closed", BODY_IDLE_S)
        if not cycle.response_started:
            self._answer(
                408,
                "Request Timeout",
                f"The request's body stopped arriving: under {BODY_MIN_BYTES:,} bytes of it came in "
                f"{BODY_IDLE_S:g} s.",
            )
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # the next pipelined request starts, if any
        if self._refused and not self.transport.is_closing() and self.cycle.response_complete:
            self._refuse_now()  # its 431 waited for the answers to the requests before it

    def send_400_response(self, msg: str) -> None:
        # As a 431: after the answer of a request before it (pipelined), not in its place.
        self._refuse_with(400, "Bad Request", NOT_HTTP.format(reason=msg.rstrip(".")))

    def _refuse(self) -> None:
        logger.warning("a request's line and headers went over %d bytes: 431, closed", MAX_HEAD_BYTES)
        self._refuse_with(431, "Request Header Fields Too Large", HEAD_TOO_LARGE)

    def _refuse_with(self, status: int, reason: str, detail: str) -> None:
        self._stop_head_clock()
        self._refused = (status, reason, detail)  # what comes next is dropped
        if self.cycle is None or self.cycle.response_complete:
            self._refuse_now()
        # Else an earlier request (pipelined) is still answered: its answer first, the refusal after it
        # (written now, it was read as that request's answer, and the request's own was lost).

    def _refuse_now(self) -> None:
        assert self._refused is not None
        self._answer(*self._refused)
        # A lingering close: closed at once with the rest of the request unread, the socket answers the
        # client's next bytes with a reset, which drops the refusal unread on the client's side ("connection
        # reset by peer"). The answer is followed by a FIN, what the client still sends is read and
        # dropped, and the connection closes once the client closes it, or after LINGER_S.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _answer(self, status: int, reason: str, detail: str) -> None:
        """A JSON error written straight to the connection (the app never saw the request)."""
        body = json.dumps({"detail": detail}).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason.encode())]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)


check_uvicorn()
