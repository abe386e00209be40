"""The OpenAI-compatible API's protocol: OpenAI's request/response shapes translated to and from the
server's own search, chat and embedding calls (the routes live in api/routes/openai_compat.py)."""
