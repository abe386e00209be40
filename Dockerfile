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

RUN useradd --create-home --uid 1000 rag
USER rag
EXPOSE 8000
CMD ["rag-server", "serve", "--host", "0.0.0.0", "--port", "8000"]
