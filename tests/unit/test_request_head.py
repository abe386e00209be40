"""api/request_head.py reads uvicorn's internals: a uvicorn without them stops `serve` at its start, not
later in a timer's callback (the event loop's log), its connections then left unbounded (review)."""

from __future__ import annotations

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from rag_server.api import request_head


def test_the_installed_uvicorn_has_what_the_protocol_reads() -> None:
    request_head.check_uvicorn()


def test_a_uvicorn_without_an_attribute_the_clocks_read_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def renamed(self: object, *args: object, **kwargs: object) -> None:
        self.reading_paused = False  # type: ignore[attr-defined]

    monkeypatch.setattr(FlowControl, "__init__", renamed)
    with pytest.raises(
        RuntimeError, match=r"not the uvicorn api/request_head.py was written for \(no read_paused\)"
    ):
        request_head.check_uvicorn()


def test_a_uvicorn_without_a_hook_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(HttpToolsProtocol, "on_response_complete")
    monkeypatch.setattr(RequestResponseCycle, "__init__", lambda self: None)
    with pytest.raises(
        RuntimeError, match=r"\(no on_response_complete, response_complete, response_started,"
    ):
        request_head.check_uvicorn()
