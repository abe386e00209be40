"""API keys, roles and the scope a request runs under (row-level security: docs/decisions/0010)."""
