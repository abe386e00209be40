"""The parsing child's answer for one file (ingestion/parse_child.py `parse_one`) when a library written
in Rust panics. No installed version of tiktoken, pydantic-core or cryptography is known to panic on
any file, so the panic is tiktoken's own, real one (a vocabulary with a duplicate rank), raised from the
chunker's token count (infra/tokenizer.py's encoding, replaced for the test) on a real CSV file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rag_server.config import Settings
from rag_server.ingestion.parse_child import parse_one

MARK = "needs-a-broken-tokenizer"


def _tiktoken_panic() -> None:
    import tiktoken

    # Panics in tiktoken's Rust code ("Encoder and decoder must be of equal length ...").
    tiktoken.Encoding(name="broken", pat_str=r"\w+", mergeable_ranks={b"a": 0, b"b": 0}, special_tokens={})


@pytest.fixture
def tokenizer_failing_with(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """Makes the chunker's tokenizer call `fail()` on a text containing MARK (the rest as usual)."""
    from rag_server.infra import tokenizer

    real = tokenizer.encoding()

    class Failing:
        def encode(self, text: str, **options: Any) -> list[int]:
            if MARK in text:
                fail[0]()
            return real.encode(text, **options)

    fail: list[Callable[[], None]] = []

    def install(failure: Callable[[], None]) -> None:
        fail[:] = [failure]
        monkeypatch.setattr(tokenizer, "encoding", Failing)

    return install


def _request(file_type: str, content: bytes) -> dict[str, Any]:
    return {
        "filename": f"f.{file_type}",
        "content": content,
        "file_type": file_type,
        "title": None,
        "ids": {},
    }


def test_a_rust_panic_is_a_sentence_about_the_file_not_a_crash(
    tokenizer_failing_with: Callable[[Callable[[], None]], None],
) -> None:
    tokenizer_failing_with(_tiktoken_panic)
    # Before: pyo3's PanicException (a BaseException) went through `except Exception` and ended the
    # child; the worker retried the file as an "Unexpected error".
    kind, sentence = parse_one(Settings(), _request("csv", f"name,note\ntea,{MARK}\n".encode()))
    assert (kind, sentence) == (
        "panic",
        "Reading this CSV file failed inside a library it is read with (an internal error: Encoder and "
        "decoder must be of equal length. Encoder length: 2, decoder length: 1.); the file may be "
        "malformed: save it again or convert it, then upload it again.",
    )
    # The same child still parses another file (the worker gives it a fresh one all the same).
    assert parse_one(Settings(), _request("csv", b"name,note\ntea,green\n"))[0] == "ok"


def _raise(exc: BaseException) -> Callable[[], None]:
    def fail() -> None:
        raise exc

    return fail


@pytest.mark.parametrize(
    "exc", [SystemExit(3), KeyboardInterrupt(), MemoryError()], ids=["exit", "interrupt", "memory"]
)
def test_other_base_exceptions_go_through_as_before(
    tokenizer_failing_with: Callable[[Callable[[], None]], None], exc: BaseException
) -> None:
    tokenizer_failing_with(_raise(exc))
    with pytest.raises(type(exc)):
        parse_one(Settings(), _request("csv", f"name,note\ntea,{MARK}\n".encode()))


def test_an_ordinary_exception_is_still_an_unexpected_error(
    tokenizer_failing_with: Callable[[Callable[[], None]], None],
) -> None:
    tokenizer_failing_with(_raise(ValueError("boom")))
    assert parse_one(Settings(), _request("csv", f"name,note\ntea,{MARK}\n".encode())) == (
        "error",
        "ValueError: boom",
    )
