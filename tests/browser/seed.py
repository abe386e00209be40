"""Documents for the browser tests, stored through the HTTP API (as a client would) and processed by the
stack's worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.browser.conftest import Stack

BATCH_TIMEOUT_S = 120


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def upload_and_wait(
    stack: Stack,
    files: dict[str, bytes],
    collection: str | None = None,
    file_metadata: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Upload `files` with the admin key (into `collection`, else `default`; each file's metadata from
    `file_metadata`), wait until the batch is done; the tasks by filename."""
    headers = bearer(stack.admin_key)
    data = {}
    if collection:
        data["collection"] = collection
    if file_metadata:
        data["file_metadata"] = json.dumps(file_metadata)
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        response = await client.post(
            "/upload", files=[("files", (n, c)) for n, c in files.items()], data=data or None
        )
        assert response.status_code == 202, response.text
        batch = response.json()["batch_id"]
        for _ in range(BATCH_TIMEOUT_S * 4):
            status = (await client.get(f"/tasks/{batch}/status")).json()
            if status["done"]:
                return {t["filename"]: t for t in status["tasks"]}
            await asyncio.sleep(0.25)
    raise AssertionError(f"batch {batch} not done: {status}")


async def create_key(stack: Stack, name: str, role: str) -> str:
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as client:
        response = await client.post("/keys", json={"name": name, "role": role})
        assert response.status_code == 201, response.text
        return str(response.json()["key"])


@contextmanager
def worker_paused(stack: Stack) -> Iterator[None]:
    """The stack's worker frozen: what is uploaded meanwhile stays queued until the block ends."""
    os.kill(stack.worker.popen.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(stack.worker.popen.pid, signal.SIGCONT)
