"""Fault injection against real processes (`just chaos`, tests/integration/test_faults.py).

A throwaway embedded PostgreSQL cluster of its own (it is crashed on purpose), `rag-server serve`, two
`rag-server worker`s, a fake HTTP embedder that fails on command and a fake LLM. While documents are
uploaded and chats answered, workers are SIGKILLed, PostgreSQL is crash-restarted (`pg_ctl -m
immediate`), the embedder returns 500s or refuses connections, and the server is SIGKILLed mid-stream
and mid-upload. Afterwards the run waits for every task to finish and checks the database
(rag_server.ingestion.integrity) and each document's chunks against the pipeline's own chunking.

Test infrastructure, not product code: it drives the product from outside, like a hostile operator.
"""
