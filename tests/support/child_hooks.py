"""Code run at the start of the Python processes a test starts from now on (a `sitecustomize` module put
first on PYTHONPATH), e.g. in the worker's real parsing child, which a test cannot reach otherwise."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest


def run_at_child_start(code: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "sitecustomize.py").write_text(textwrap.dedent(code))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    )


# The chunker's token count (infra/tokenizer.py's `encoding()`, replaced in the module) panics in
# tiktoken's Rust code, for real, on a text containing `mark`: tiktoken refuses a vocabulary with a
# duplicate rank with a Rust panic (pyo3's PanicException). No installed library is known to panic on any
# file, so this is the nearest real one. The encodings below wrap the one set before them (`real`, bound
# at definition): they can be chained.
_WRAPPED_ENCODING = """
    import rag_server.infra.tokenizer as _tokenizer

    def encoding(real=_tokenizer.encoding):
        inner = real()

        class Encoding:
            def encode(self, text, **options):
                if {{mark!r}} in text:
                    {when_marked}
                return inner.encode(text, **options)

        return Encoding()

    _tokenizer.encoding = encoding
"""
# A real Rust panic: a statement.
PANIC = (
    "import tiktoken; tiktoken.Encoding(name='broken', pat_str=r'\\w+', "
    "mergeable_ranks={b'a': 0, b'b': 0}, special_tokens={})"
)
TOKENIZER_PANICS_ON = _WRAPPED_ENCODING.format(when_marked=PANIC.replace("{", "{{").replace("}", "}}"))


# The chunker's token count, on a text containing `mark`, fills the process's memory up to its limit (the
# parsing child's address space limit), lets it go, then does `then`: what a library that ran out of
# memory does where it cannot raise a MemoryError. `then` is a statement (PANIC above is one).
TOKENIZER_FILLS_MEMORY_ON = (
    _WRAPPED_ENCODING.format(when_marked="_fill_memory_then()")
    + """
    def _fill_memory_then():
        ballast = []
        try:
            while True:
                ballast.append(bytearray(1 << 20))
        except MemoryError:
            pass
        del ballast
        {then}
"""
)


# Writes `started PID` to `log`, then each directory under `root` that the process lists with os.scandir
# (what pathlib's rglob does), seen through an audit hook: nothing of the process itself is changed.
SCANDIRS_UNDER = """
    import os
    import sys

    def hook(event, args):
        if event == "os.scandir" and args and str(args[0]).startswith({root!r}):
            with open({log!r}, "a") as log:
                log.write(f"scandir {{args[0]}}\\n")

    with open({log!r}, "a") as log:
        log.write(f"started {{os.getpid()}}\\n")
    sys.addaudithook(hook)
"""


# The chunker's token count, on a text containing `mark`, first spends `burn_s` seconds of processor
# time, then sleeps `sleep_s` seconds (using none): a parser at work, then one blocked. A short text's
# tokens are counted once (a longer one's again, piece by piece: each time).
TOKENIZER_BURNS_THEN_SLEEPS_ON = (
    _WRAPPED_ENCODING.format(when_marked="_burn_then_sleep()")
    + """
    import time

    def _burn_then_sleep():
        end = time.process_time() + {burn_s}
        while time.process_time() < end:
            pass
        time.sleep({sleep_s})
"""
)
