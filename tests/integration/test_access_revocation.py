"""Revoking keys (migration 0017), through a real server with an LLM (tests/fakes/llm_server.py): an
answer still streaming when its key is revoked is not saved, and revoking the last key closes the API
(it never falls back to open mode, for a revoked key least of all). The tests run in file order: the
last one revokes every key of this module's database."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag_server.access import keys
from rag_server.access.exposure import prepare_access
from rag_server.access.models import CreateKey
from rag_server.config import Settings
from rag_server.infra.runtime import Runtime
from rag_server.ingestion.pipeline import DirectDocument, ingest_documents_direct
from tests.fakes.llm_server import Behaviour, FakeLLM
from tests.support.processes import settings_env
from tests.support.sse import read_events


@pytest.fixture(scope="module")
def settings(database_url: str, data_dir: Path, fake_llm: FakeLLM) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        llm_provider="openai",
        llm_base_url=fake_llm.base_url,
        llm_model="fake-model",
        llm_timeout_s=5,
        llm_max_retries=0,
    )


@pytest.fixture(scope="module")
async def made_keys(runtime: Runtime) -> dict[str, str]:
    text = b"Zebrafish regenerate heart muscle after injury; the regeneration starts within days."
    await ingest_documents_direct(runtime, [DirectDocument("zebrafish.txt", text, {})])
    return {
        spec.name: (await keys.create_key(runtime.pool, spec)).key
        for spec in (CreateKey(name="boss", role="admin"), CreateKey(name="reader", role="reader"))
    }


@pytest.fixture
async def client(live_app_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_app_url, timeout=60) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_an_answer_streaming_when_its_key_is_revoked_is_not_saved(
    client: httpx.AsyncClient, made_keys: dict[str, str], fake_llm: FakeLLM
) -> None:
    release = threading.Event()
    fake_llm.behaviour = Behaviour(hang_after_tokens=1, release=release, affects={"answer"})
    body = {"query": "What regenerates heart muscle?", "session_id": "revoked-midway"}
    events: list[tuple[str, dict[str, Any]]] = []
    async with client.stream("POST", "/query/stream", json=body, headers=bearer(made_keys["reader"])) as r:
        assert r.status_code == 200
        stream = read_events(r.aiter_lines())
        async for kind, _ in stream:
            if kind == "token":
                break  # the answer is under way: revoke its key, then let the LLM finish
        revoked = await client.delete("/keys/reader", headers=bearer(made_keys["boss"]))
        assert revoked.status_code == 200, revoked.text
        release.set()
        events += [e async for e in stream]
    assert events[-1][0] == "error"
    assert "revoked" in events[-1][1]["detail"] and "not saved" in events[-1][1]["detail"]
    assert "done" not in [e for e, _ in events]
    # Nothing of it was written: not the session it would have created, not a message.
    every = await client.get("/chat/sessions?all_owners=true", headers=bearer(made_keys["boss"]))
    assert every.status_code == 200 and every.json()["sessions"] == []
    assert (await client.get("/collections", headers=bearer(made_keys["reader"]))).status_code == 401


async def test_a_response_streaming_when_its_key_is_revoked_is_not_stored(
    client: httpx.AsyncClient, runtime: Runtime, made_keys: dict[str, str], fake_llm: FakeLLM
) -> None:
    """A stored /v1 response (migration 0030) is written like a chat turn: only while its key is live."""
    key = (await keys.create_key(runtime.pool, CreateKey(name="responder", role="reader"))).key
    release = threading.Event()
    fake_llm.behaviour = Behaviour(hang_after_tokens=1, release=release, affects={"answer"})
    body = {"model": "rag:default", "input": "What regenerates heart muscle?", "stream": True}
    events: list[dict[str, Any]] = []
    async with client.stream("POST", "/v1/responses", json=body, headers=bearer(key)) as r:
        assert r.status_code == 200
        lines = r.aiter_lines()
        async for line in lines:
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
                if events[-1]["type"] == "response.output_text.delta":
                    break  # the answer is under way: revoke its key, then let the LLM finish
        revoked = await client.delete("/keys/responder", headers=bearer(made_keys["boss"]))
        assert revoked.status_code == 200, revoked.text
        release.set()
        events += [
            json.loads(line.removeprefix("data: ")) async for line in lines if line.startswith("data: ")
        ]
    assert events[-1]["type"] == "response.failed"
    assert (
        events[-1]["response"]["error"]["message"] == "the response was not stored: its API key was revoked"
    )
    response_id = events[0]["response"]["id"]
    kept = await client.get(f"/v1/responses/{response_id}", headers=bearer(made_keys["boss"]))
    assert kept.status_code == 404, kept.text


async def test_revoking_the_last_key_closes_the_api_and_never_reopens_it(
    client: httpx.AsyncClient,
    made_keys: dict[str, str],
    settings: Settings,
    runtime: Runtime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    boss = bearer(made_keys["boss"])
    assert (await client.get("/collections", headers=boss)).status_code == 200
    revoked = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rag_server", "keys", "revoke", "boss"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert "no active key is left" in revoked.stdout and "rag-server keys create" in revoked.stdout
    # Before 0017 this answered 200 to anyone on loopback, as an admin, revoked keys included.
    assert (await client.get("/health")).json()["auth"] == "api_key"
    for headers in ({}, boss, bearer(made_keys["reader"]), bearer("sk-anything")):
        assert (await client.get("/collections", headers=headers)).status_code == 401
        made = await client.post("/keys", json={"name": "sneaky", "role": "admin"}, headers=headers)
        assert made.status_code == 401, made.text
    # A server starting now says why everything is a 401 (after an upgrade past 0017 nothing else did).
    with caplog.at_level(logging.WARNING, logger="rag_server.access.exposure"):
        assert await prepare_access(runtime.pool, settings, announce=False) == "api_key"  # serve's pre-check
        assert not caplog.records
        assert await prepare_access(runtime.pool, settings) == "api_key"
    assert [r.getMessage()[:26] for r in caplog.records] == ["every API key is revoked: "], caplog.text
