# Every recipe installs the project into .venv first when it is missing or pyproject.toml changed.

set shell := ["bash", "-euo", "pipefail", "-c"]

bin := ".venv/bin"
dataset := "../shared/datasets/scifact"

export HF_HUB_OFFLINE := "1"

default:
    @just --list

# create .venv and install the project (skipped when up to date)
install:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x {{bin}}/rag-server ] || [ pyproject.toml -nt .venv/.installed ]; then
        python3 -m venv .venv
        {{bin}}/pip install -q --upgrade pip
        # torch first, pinned, from PyTorch's CPU index (PyPI's torch pulls GBs of CUDA wheels), then its
        # dependencies from PyPI. Offline, pip says it cannot reach that index and takes a CPU wheel it
        # finds elsewhere (--find-links); only torch is looked up there, once.
        {{bin}}/pip install -q --no-deps torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
        {{bin}}/pip install -q torch==2.13.0
        {{bin}}/pip install -q -e '.[dev,eval]'
        touch .venv/.installed
    fi

# run the whole stack on the embedded database: migrations, API on :8000, one worker
up *ARGS: install
    {{bin}}/rag-server up {{ARGS}}

# apply database migrations
migrate: install
    {{bin}}/rag-server migrate

# print extensions, BM25 engine and embedding model of the database
doctor: install
    {{bin}}/rag-server doctor

# Three pytest processes, a module each at a time (its fixtures stay together): the suite mostly waits on
# subprocesses and sockets, so three share two cores well (about half the time of one). The 25 slowest
# tests are listed at the end: the suite must stay under CI's 20 minutes.
[doc("all tests: unit, integration (real embedded PostgreSQL and processes), browser (Chromium on the web app)")]
test: install
    {{bin}}/pytest -n 3 --dist loadfile --durations=25 tests/unit tests/integration tests/browser

# unit tests (no database)
test-unit: install
    {{bin}}/pytest tests/unit

# integration tests (embedded PostgreSQL, real server and worker processes)
test-integration: install
    {{bin}}/pytest tests/integration

# the web app in a real Chromium (Debian package `chromium`) against a real stack
test-browser: install
    {{bin}}/pytest tests/browser

# a screenshot of each main view of the web app, light and dark, into reports/ui/
screenshots: install
    {{bin}}/python -m tests.browser.screenshots --out reports/ui

# fuzz the whole API deeper than the suite does: DEPTH × (100 valid + 50 invalid) per operation, new random ones
fuzz DEPTH="5": install
    RAG_FUZZ_DEPTH={{DEPTH}} RAG_TEST_HANG_S=0 {{bin}}/pytest -n 3 tests/integration/test_api_fuzz.py

# 200 documents while workers are SIGKILLed, PostgreSQL crash-restarts, the embedder fails and the server
# dies mid-stream and mid-upload; then every invariant (`rag-server check`) and each document's chunks
# against a clean chunking. Prints its figures; exit 1 on a violation.
[doc("fault injection (tests/chaos): kills, crashes, failures, then every invariant checked")]
chaos *ARGS: install
    {{bin}}/python -m tests.chaos {{ARGS}}

# ruff + mypy
lint: install
    {{bin}}/ruff check services tests
    {{bin}}/ruff format --check services tests
    {{bin}}/mypy

# format the code
fmt: install
    {{bin}}/ruff format services tests
    {{bin}}/ruff check --fix services tests

# production stack on ParadeDB (needs a Docker engine); creates the admin key secret on first use
docker-up:
    #!/usr/bin/env sh
    set -eu
    if [ ! -s secrets/rag_admin_key ]; then
        mkdir -p secrets
        (umask 077 && openssl rand -hex 32 > secrets/rag_admin_key)
        echo "created the admin API key in secrets/rag_admin_key (send it as 'Authorization: Bearer <key>')"
    fi
    # Compose mounts a secret file with its owner and mode, and the server runs as uid 1000 in its
    # container: the file must be readable by others, so the folder is what keeps other users out. Every
    # time: a key made by an earlier version of this recipe is 600 in a 755 folder.
    chmod 700 secrets && chmod 644 secrets/rag_admin_key
    docker compose up -d --build

docker-down:
    docker compose down

# retrieval quality on SciFact: bm25/vector/hybrid + peers; writes reports/eval-scifact.{json,md,png}
eval *ARGS: install
    {{bin}}/rag-server eval --dataset {{dataset}} --peers --json reports/eval-scifact.json --report reports/eval-scifact.md {{ARGS}}

# both benchmarks at a size that finishes in a few minutes here
bench: install
    {{bin}}/rag-server bench search --dataset {{dataset}} --scale 20000 --requests 200 --json reports/bench-search.json
    {{bin}}/rag-server bench ingest --dataset {{dataset}} --limit 500 --workers 1,2 --json reports/bench-ingest.json

# HTTP /search latency at 1/8/32 clients (e.g. `just bench-search --scale 100000`)
bench-search *ARGS: install
    {{bin}}/rag-server bench search --dataset {{dataset}} --json reports/bench-search.json {{ARGS}}

# Builds (in bulk, under nice) or reuses each scale's bench database, then times each scale (hybrid, bm25,
# vector at 1 and 8 clients); `--lock FILE` takes turns with other measurements on a shared machine.
[doc("search cost by corpus size -> reports/bench-search-scale.{json,md,png} (e.g. `just bench-scale 10k,100k`)")]
bench-scale scales="10000,100000,300000,1000000" *ARGS: install
    nice -n 15 {{bin}}/rag-server bench search --dataset {{dataset}} --scale {{scales}} --build-only
    {{bin}}/rag-server bench search --dataset {{dataset}} --scale {{scales}} --clients 1,8 --requests 600 --json reports/bench-search-scale.json --report reports/bench-search-scale.md {{ARGS}}

# ingest SciFact through the API and worker(s) vs raw embedding throughput (e.g. `--workers 2 --limit 1000`)
bench-ingest *ARGS: install
    {{bin}}/rag-server bench ingest --dataset {{dataset}} --json reports/bench-ingest.json {{ARGS}}

# BM25 statistics global vs per collection on SciFact setups (docs/decisions/0009); writes reports/bm25-stats.json
bm25-stats *ARGS: install
    {{bin}}/python -m rag_server.evaluation.bm25_stats_study --dataset {{dataset}} --json reports/bm25-stats.json {{ARGS}}
