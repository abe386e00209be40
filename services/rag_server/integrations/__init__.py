"""Public adapters for using rag-server's data from LlamaIndex code (the server itself does not use them).

- `llamaindex_retrievers`: `VectorRetriever`, `BM25Retriever`, `HybridRetriever` (LlamaIndex
  `BaseRetriever`s running `retrieval.service.search` on a Runtime).
- `llamaindex_chat_store`: `PostgresChatStore` (a LlamaIndex `BaseChatStore` over the chat tables).

See docs/integrations.md and examples/llamaindex_retriever.py.
"""
