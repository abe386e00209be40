"""Collections: named sets of documents. Every collection-scoped read resolves its scope through
`store.resolve` (the one place a later key or row-level scope narrows)."""
