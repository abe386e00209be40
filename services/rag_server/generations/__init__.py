"""Embedding generations: a new embedding model without downtime (`rag-server reembed`)."""
