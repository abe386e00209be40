"""Token counts in OpenAI's cl100k encoding (tiktoken): chunk sizes and the OpenAI-compatible API's usage.

tiktoken downloads an encoding's BPE file on first use, and nothing downloads here: LlamaIndex's package
ships cl100k's in its own tiktoken cache, which is read from its folder without importing LlamaIndex
(its import alone costs a parsing child ~0.9 s of CPU and ~70 MB).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

ENCODING = "cl100k_base"


def _bundled_cache() -> str | None:
    """LlamaIndex's tiktoken cache folder (found, not imported), if it is installed."""
    spec = importlib.util.find_spec("llama_index.core")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return next((str(Path(f) / "_static" / "tiktoken_cache") for f in folders), None)


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    import tiktoken

    if "TIKTOKEN_CACHE_DIR" in os.environ or (bundled := _bundled_cache()) is None:
        return tiktoken.get_encoding(ENCODING)
    # Set only while the file is read: whoever else uses tiktoken in this process keeps its own default.
    os.environ["TIKTOKEN_CACHE_DIR"] = bundled
    try:
        return tiktoken.get_encoding(ENCODING)
    finally:
        del os.environ["TIKTOKEN_CACHE_DIR"]


def count_tokens(text: str) -> int:
    """Tokens of `text`, special tokens' text (`<|endoftext|>`) counted as one token each."""
    return len(encoding().encode(text, allowed_special="all"))
