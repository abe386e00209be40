"""Infrastructure: the database, the queue, embeddings and LLM clients. No domain logic here."""
