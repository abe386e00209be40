"""Hybrid search and RAG on one PostgreSQL database."""

__version__ = "0.1.0"
