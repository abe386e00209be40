# One image for both services: `rag-server serve` and `rag-server worker`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1

WORKDIR /app
# CPU-only torch first so the project's torch==2.13.0 pin does not resolve to the CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install .

# The local embedding model's ONNX graphs, exported at build time (not by every container at start):
# fp32 for documents, int8 for search queries (RAG_EMBEDDING_QUERY_PRECISION=auto); /app/models is
# read-only for the `rag` user.
ENV RAG_MODEL_CACHE_DIR=/app/models
RUN python -c "from pathlib import Path; from rag_server.infra.sentence_encoders import load_sentence_encoder; \
[load_sentence_encoder('sentence-transformers/all-MiniLM-L6-v2', 'onnx', Path('/app/models'), p) for p in ('fp32', 'int8')]"

RUN useradd --create-home --uid 1000 rag
USER rag
EXPOSE 8000
CMD ["rag-server", "serve", "--host", "0.0.0.0", "--port", "8000"]
