"""Helpers of the chat browser tests: documents ingested through the API, a question asked as a person
does, the conversation's messages read back."""

from __future__ import annotations

import asyncio

import httpx
from playwright.async_api import Locator, Page, expect

from tests.browser.conftest import Stack

DOCS = {
    "hnsw.txt": "HNSW is a graph-based index for approximate nearest neighbour search. pgvector builds "
    "HNSW indexes with the parameters m and ef_construction. A higher ef_search improves recall "
    "at the cost of query speed.",
    "pasta.txt": "To cook pasta, boil salted water, add the pasta and cook it until al dente. Drain the "
    "pasta and serve it with a tomato sauce.",
    "quokka.txt": "Quokka field notes. <script>window.__pwned=1</script> The quokka lives on Rottnest "
    'island. <img src=x onerror="window.__pwned=1"> Read [click](javascript:window.__pwned=1) for more '
    "about the quokka.",
}


async def ingest(stack: Stack, docs: dict[str, str]) -> dict[str, str]:
    """Upload the files with the admin key and wait for their batch; returns name -> document id."""
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as client:
        files = [("files", (name, text.encode(), "text/plain")) for name, text in docs.items()]
        response = await client.post("/upload", files=files)
        assert response.status_code == 202, response.text
        batch = response.json()["batch_id"]
        for _ in range(600):
            status = (await client.get(f"/tasks/{batch}/status")).json()
            if status["done"]:
                break
            await asyncio.sleep(0.2)
        assert status["done"] and status["counts"].get("completed") == len(docs), status
        listed = (await client.get("/documents", params={"limit": 200})).json()
    return {d["filename"]: d["id"] for d in listed["items"] if d["filename"] in docs}


def thread(page: Page) -> Locator:
    return page.locator(".thread")


def answers(page: Page) -> Locator:
    return page.locator(".thread .msg-assistant")


async def ask(page: Page, question: str) -> Locator:
    """Type the question, send it with Enter and wait for the complete answer (its Copy button)."""
    count = await answers(page).count()
    box = page.get_by_label("Message", exact=True)
    await box.fill(question)
    await box.press("Enter")
    answer = answers(page).nth(count)
    await expect(answer.get_by_role("button", name="Copy answer")).to_be_visible(timeout=60_000)
    return answer
