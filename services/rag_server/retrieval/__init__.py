"""Retrieval: vector (HNSW), BM25 (pg_search or native) and their fusion over the one chunks table."""
