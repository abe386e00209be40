"""The Python client of the rag-server API: `Client` and `AsyncClient`, in the style of httpx's.

One place for how the CLI and scripts talk to a running server: the API key (an argument, else
`RAG_API_KEY`), retries on 429/503 and on connections that could not be opened (`Retry-After` honoured,
else exponential backoff), typed results, and every failure as a `ClientError` whose message is one
sentence that says what to do.

    from rag_server.client import Client

    with Client("http://127.0.0.1:8000", api_key="rag_...") as rag:
        batch = rag.upload(["paper.pdf"], collection="papers")
        hits = rag.search("what reduces inflammation?", collections=["papers"])
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from rag_server.access.models import ApiKey, KeyList
from rag_server.chat.models import QueryResponse, SessionList
from rag_server.client_calls import Call, Calls, FileToSend, KeyReach
from rag_server.client_errors import ClientError
from rag_server.client_retries import RetrySettings, remember_write
from rag_server.ingestion.models import (
    BatchStatus,
    DeletedDocuments,
    Document,
    DocumentDetail,
    DocumentList,
    DuplicateCheckResult,
    UpdatedDocuments,
    UploadResponse,
)
from rag_server.ingestion.operations_models import AdminTaskList, BulkTaskResult
from rag_server.retrieval.models import DocumentChunks, SearchResponse

__all__ = ["AsyncClient", "Client", "ClientError"]

DEFAULT_URL = "http://127.0.0.1:8000"

T = TypeVar("T")


class Client:
    """Synchronous client. `transport`: an httpx transport (tests hand in the app's)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._s = RetrySettings(base_url, api_key, timeout, retries, backoff_s)
        self._http = httpx.Client(
            base_url=self._s.base_url, headers=self._s.headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, ok: int = 200, **kwargs: Any) -> httpx.Response:
        """The response when its status is `ok`; retried while the server says "not processed"."""
        for attempt in range(self._s.retries + 1):
            response, error = None, None
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                error = exc
            outcome = self._s.outcome(attempt, ok, response, error)
            if isinstance(outcome, httpx.Response):
                remember_write(outcome, self._http.headers)
                return outcome
            time.sleep(outcome)
        raise AssertionError("unreachable")

    def _send(self, call: Call[T]) -> T:
        return call.parse(self.request(call.method, call.path, ok=call.ok, **call.kwargs))

    def health(self) -> dict[str, Any]:
        return self._send(Calls.health())

    def status(self) -> dict[str, Any]:
        """GET /status: the server's version, this key's role, its upload limits (`upload`)."""
        return self._send(Calls.status())

    def search(self, query: str, **params: Any) -> SearchResponse:
        """POST /search; `params`: search_type, top_k, collections, filters... (SearchRequest)."""
        return self._send(Calls.search(query, params))

    def query(self, query: str, **params: Any) -> QueryResponse:
        """POST /query: a cited answer; `params`: session_id, collections, search_type..."""
        return self._send(Calls.query(query, params))

    def check_duplicates(
        self, files: Sequence[tuple[str, str]], collection: str = "default"
    ) -> DuplicateCheckResult:
        """`files`: (filename, sha256 hex) pairs."""
        return self._send(Calls.check_duplicates(files, collection))

    def upload(
        self,
        paths: Sequence[FileToSend],
        collection: str = "default",
        *,
        metadata: dict[str, Any] | None = None,
        file_metadata: dict[str, dict[str, Any]] | None = None,
        replace: bool = False,
    ) -> UploadResponse:
        """POST /upload. `paths`: a path, or (the document's name, which may hold folders, path);
        `metadata`: every file's; `file_metadata`: by file name, on top; `replace`: a file named like a
        stored document of the collection replaces its file. The answer's `warnings`: names given by
        several files (each became a document of that name; with `replace`, a ClientError 422)."""
        return self._send(Calls.upload(paths, collection, metadata, file_metadata, replace))

    def replace_file(
        self, document_id: str, path: str | Path, *, metadata: dict[str, Any] | None = None
    ) -> UploadResponse:
        """PUT /documents/{id}/file: a new version of the document (same id) once processed."""
        return self._send(Calls.replace_file(document_id, path, metadata))

    def document(self, document_id: str) -> DocumentDetail:
        return self._send(Calls.document(document_id))

    def documents(self, collection: str = "default", **params: Any) -> DocumentList:
        """GET /documents: a page of the collection's documents; `params`: limit, offset, sort, order,
        status, type, name (part of it), metadata (a dict every key of which must match), text (Chroma's
        where_document: {"$contains": "draft"}, on the documents' chunks)."""
        return self._send(Calls.documents(collection, params))

    def chunks(
        self, document_id: str, *, offset: int = 0, limit: int = 50, text: dict[str, Any] | None = None
    ) -> DocumentChunks:
        """GET /documents/{id}/chunks: the document's chunks in order from `offset`; `text` (Chroma's
        where_document: {"$contains": "dose"}): only those whose text matches, `offset` of them skipped."""
        return self._send(Calls.chunks(document_id, offset, limit, text))

    def delete_document(self, document_id: str) -> None:
        """DELETE /documents/{id}: the document, its bytes and its chunks."""
        self._send(Calls.delete_document(document_id))

    def delete_documents(
        self,
        collection: str = "default",
        *,
        ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        text: dict[str, Any] | None = None,
        expected_count: int | None = None,
    ) -> DeletedDocuments:
        """POST /documents/delete: the collection's documents that `ids`, `metadata`, `text` or several
        name. `expected_count`: how many you confirmed; another number now: a 409 `selection_changed`."""
        return self._send(Calls.delete_documents(collection, ids, metadata, text, expected_count))

    def update_metadata(
        self,
        document_id: str,
        metadata: dict[str, Any],
        mode: str = "replace",
        *,
        expected: dict[str, Any] | None = None,
    ) -> Document:
        """PATCH /documents/{id}: `replace` the metadata, or `merge` top-level keys (null removes one).
        `expected`: the metadata as last read; changed since, nothing is written (a 409 error)."""
        return self._send(Calls.update_metadata(document_id, metadata, mode, expected))

    def update_documents(
        self, collection: str = "default", *, metadata: Mapping[str, dict[str, Any]], mode: str = "merge"
    ) -> UpdatedDocuments:
        """POST /documents/metadata: `metadata` by document id, all in one transaction; `merge` (the
        default, as Chroma's update(ids, metadatas)) or `replace`. Ids not in the collection come back in
        `not_updated`."""
        return self._send(Calls.update_documents(collection, metadata, mode))

    def update_matching(
        self,
        collection: str = "default",
        *,
        values: dict[str, Any],
        ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        text: dict[str, Any] | None = None,
        mode: str = "merge",
        expected_count: int | None = None,
    ) -> UpdatedDocuments:
        """POST /documents/metadata/matching: `values` for each document selected as delete_documents does
        (`expected_count` too: else 409, nothing written)."""
        selection = (ids, metadata, text, expected_count)
        return self._send(Calls.update_matching(collection, values, mode, selection))

    def chat_sessions(self, q: str | None = None, **params: Any) -> SessionList:
        """GET /chat/sessions: a page of your chat sessions, most recently active first; `q`: those whose
        title or messages hold words beginning with each of its words; `params`: limit, offset,
        include_archived, only_archived."""
        return self._send(Calls.chat_sessions(q, params))

    def batch_status(self, batch_id: str) -> BatchStatus:
        return self._send(Calls.batch_status(batch_id))

    def tasks(self, **params: Any) -> AdminTaskList:
        """GET /admin/tasks (an admin key): a page of the ingestion tasks, newest first; `params`: status,
        collection, batch_id, stuck, limit, offset."""
        return self._send(Calls.tasks(params))

    def retry_tasks(
        self, *, batch_id: str | None = None, collection: str | None = None, all: bool = False
    ) -> BulkTaskResult:
        """POST /admin/tasks/retry (an admin key): every failed task of a batch, a collection or (`all`)
        every collection queued again; `skipped`: those that could not be, and why. Exactly one of the
        three. `done` and `skipped` list the first 1,000 each (`truncated`); `done_count`, `skipped_count`
        count them all."""
        return self._send(Calls.retry_tasks(batch_id, collection, all))

    def keys(self, *, include_revoked: bool = False, limit: int = 100, offset: int = 0) -> KeyList:
        """GET /keys (an admin key): a page of the API keys by name, `total` all of them."""
        return self._send(Calls.keys(include_revoked, limit, offset))

    def update_key(self, name: str, *, role: str | None = None, collections: KeyReach = None) -> ApiKey:
        """PATCH /keys/{name} (an admin key): the active key's new role, collections (replacing its own;
        "every": all, new ones too), or both; the key stays the same. Refused: a ClientError."""
        return self._send(Calls.update_key(name, role, collections))


class AsyncClient:
    """The same API for asyncio code."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._s = RetrySettings(base_url, api_key, timeout, retries, backoff_s)
        self._http = httpx.AsyncClient(
            base_url=self._s.base_url, headers=self._s.headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, *, ok: int = 200, **kwargs: Any) -> httpx.Response:
        for attempt in range(self._s.retries + 1):
            response, error = None, None
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                error = exc
            outcome = self._s.outcome(attempt, ok, response, error)
            if isinstance(outcome, httpx.Response):
                remember_write(outcome, self._http.headers)
                return outcome
            await asyncio.sleep(outcome)
        raise AssertionError("unreachable")

    async def _send(self, call: Call[T]) -> T:
        return call.parse(await self.request(call.method, call.path, ok=call.ok, **call.kwargs))

    async def health(self) -> dict[str, Any]:
        return await self._send(Calls.health())

    async def status(self) -> dict[str, Any]:
        return await self._send(Calls.status())

    async def search(self, query: str, **params: Any) -> SearchResponse:
        return await self._send(Calls.search(query, params))

    async def query(self, query: str, **params: Any) -> QueryResponse:
        return await self._send(Calls.query(query, params))

    async def check_duplicates(
        self, files: Sequence[tuple[str, str]], collection: str = "default"
    ) -> DuplicateCheckResult:
        return await self._send(Calls.check_duplicates(files, collection))

    async def upload(
        self,
        paths: Sequence[FileToSend],
        collection: str = "default",
        *,
        metadata: dict[str, Any] | None = None,
        file_metadata: dict[str, dict[str, Any]] | None = None,
        replace: bool = False,
    ) -> UploadResponse:
        return await self._send(Calls.upload(paths, collection, metadata, file_metadata, replace))

    async def replace_file(
        self, document_id: str, path: str | Path, *, metadata: dict[str, Any] | None = None
    ) -> UploadResponse:
        return await self._send(Calls.replace_file(document_id, path, metadata))

    async def document(self, document_id: str) -> DocumentDetail:
        return await self._send(Calls.document(document_id))

    async def documents(self, collection: str = "default", **params: Any) -> DocumentList:
        return await self._send(Calls.documents(collection, params))

    async def chunks(
        self, document_id: str, *, offset: int = 0, limit: int = 50, text: dict[str, Any] | None = None
    ) -> DocumentChunks:
        return await self._send(Calls.chunks(document_id, offset, limit, text))

    async def delete_document(self, document_id: str) -> None:
        await self._send(Calls.delete_document(document_id))

    async def delete_documents(
        self,
        collection: str = "default",
        *,
        ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        text: dict[str, Any] | None = None,
        expected_count: int | None = None,
    ) -> DeletedDocuments:
        return await self._send(Calls.delete_documents(collection, ids, metadata, text, expected_count))

    async def update_matching(
        self,
        collection: str = "default",
        *,
        values: dict[str, Any],
        ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        text: dict[str, Any] | None = None,
        mode: str = "merge",
        expected_count: int | None = None,
    ) -> UpdatedDocuments:
        selection = (ids, metadata, text, expected_count)
        return await self._send(Calls.update_matching(collection, values, mode, selection))

    async def update_metadata(
        self,
        document_id: str,
        metadata: dict[str, Any],
        mode: str = "replace",
        *,
        expected: dict[str, Any] | None = None,
    ) -> Document:
        return await self._send(Calls.update_metadata(document_id, metadata, mode, expected))

    async def update_documents(
        self, collection: str = "default", *, metadata: Mapping[str, dict[str, Any]], mode: str = "merge"
    ) -> UpdatedDocuments:
        return await self._send(Calls.update_documents(collection, metadata, mode))

    async def chat_sessions(self, q: str | None = None, **params: Any) -> SessionList:
        return await self._send(Calls.chat_sessions(q, params))

    async def batch_status(self, batch_id: str) -> BatchStatus:
        return await self._send(Calls.batch_status(batch_id))

    async def tasks(self, **params: Any) -> AdminTaskList:
        return await self._send(Calls.tasks(params))

    async def retry_tasks(
        self, *, batch_id: str | None = None, collection: str | None = None, all: bool = False
    ) -> BulkTaskResult:
        return await self._send(Calls.retry_tasks(batch_id, collection, all))

    async def keys(self, *, include_revoked: bool = False, limit: int = 100, offset: int = 0) -> KeyList:
        """GET /keys (an admin key): a page of the API keys by name, `total` all of them."""
        return await self._send(Calls.keys(include_revoked, limit, offset))

    async def update_key(self, name: str, *, role: str | None = None, collections: KeyReach = None) -> ApiKey:
        return await self._send(Calls.update_key(name, role, collections))
