"""Ingestion: storing uploads, the pgmq worker, parsing, chunking, embedding, writing chunks."""
