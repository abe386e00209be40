"""Eval commands import without the eval extra's LlamaIndex vector store; the peer names what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

# Runs in a fresh interpreter where importing llama_index.vector_stores fails, as it does when the
# eval extra is not installed.
SCRIPT = textwrap.dedent(
    """
    import sys

    class Missing:
        def find_spec(self, name, path=None, target=None):
            if name == "llama_index.vector_stores" or name.startswith("llama_index.vector_stores."):
                raise ImportError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, Missing())

    from rag_server.evaluation import commands, peers, runner  # noqa: F401

    assert not any(m.startswith("llama_index.vector_stores") for m in sys.modules)
    try:
        peers.LlamaIndexHybridPeer("postgresql://u@localhost/db", 384, 40)
    except ImportError as exc:
        print("PEER:", exc)
    try:
        commands._require_eval_extra()
    except ValueError as exc:
        print("EXTRA:", exc)
    from rag_server.cli import main

    main(["eval", "--help"])
    """
)


def test_eval_help_and_peers_import_without_the_llamaindex_vector_store() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=dict(os.environ), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "PEER: the llamaindex_hybrid peer needs llama-index-vector-stores-postgres" in proc.stdout
    assert "EXTRA: --peers/--report need the eval extra" in proc.stdout
    assert "llama_index.vector_stores.postgres" in proc.stdout
    assert "usage: rag-server eval" in proc.stdout
