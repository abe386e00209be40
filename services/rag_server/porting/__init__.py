"""Moving documents in and out: import from Chroma and pgvector tables, export to JSONL and back."""
