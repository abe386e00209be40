"""Chat: Postgres-backed sessions and history, grounded answers with citations."""
