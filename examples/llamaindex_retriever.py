"""Retrieve rag-server chunks through LlamaIndex's retriever interface.

    python examples/llamaindex_retriever.py ["your question"]

Uses DATABASE_URL when set, else the embedded PostgreSQL under RAG_DATA_DIR (started if needed), and
the embedding model from the usual RAG_* settings. It migrates the database, ingests a short text
through the same parse/chunk/embed/write path as uploads (identical bytes are stored once, so
re-running adds nothing), then runs the LlamaIndex HybridRetriever and prints the nodes.
"""

from __future__ import annotations

import asyncio
import sys

from rag_server.config import Settings
from rag_server.infra.runtime import open_runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from rag_server.integrations.llamaindex_retrievers import HybridRetriever

TEXT = """Lighthouses guided ships along dangerous coasts for centuries.
The Fresnel lens, invented in 1822, let a lighthouse beam be seen more than twenty miles out to sea.
Today most lighthouses are automated and their keepers have gone, but the lights still turn each night.
"""


async def main(query: str) -> None:
    settings = Settings()
    async with open_runtime(settings, migrate=True, load_embedder="queries") as runtime:
        document = DirectDocument("lighthouses.txt", TEXT.encode(), {"source": "example"})
        await ingest_documents_direct(runtime, [document])

        retriever = HybridRetriever(runtime, top_k=3)
        nodes = await retriever.aretrieve(query)  # the async path; sync retrieve() needs another thread
        print(f"query: {query}")
        for node in nodes:
            meta = node.node.metadata
            where = f"{meta['document_name']}#{meta['chunk_index']}"
            print(f"{node.score:.4f}  {where}  {node.node.get_content()[:120]!r}")


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "Who invented the lens that made lighthouse beams visible?"))
