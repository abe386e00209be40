"""MCP server: the search/ask/documents tools for assistants (stdio and streamable HTTP)."""
