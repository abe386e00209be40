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
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx
from pydantic import BaseModel

from rag_server.chat.models import QueryResponse
from rag_server.client_errors import ClientError, failure, unreachable
from rag_server.ingestion.models import (
    BatchStatus,
    DeletedDocuments,
    Document,
    DocumentList,
    DuplicateCheckResult,
    UploadResponse,
)
from rag_server.read_after import READ_AFTER_HEADER, lsn_text, parse_lsn
from rag_server.retrieval.models import SearchResponse

__all__ = ["AsyncClient", "Client", "ClientError"]

DEFAULT_URL = "http://127.0.0.1:8000"
# Statuses that say "not processed, try again": a proxy's rate limit, our database being unavailable.
RETRY_STATUSES = frozenset({429, 503})

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def _delay(attempt: int, backoff_s: float, response: httpx.Response | None) -> float:
    retry_after = response.headers.get("retry-after") if response is not None else None
    if retry_after and retry_after.isdigit():
        return min(float(retry_after), 30.0)
    return backoff_s * 2**attempt


def _retryable(response: httpx.Response | None, exc: httpx.TransportError | None) -> bool:
    # Only failures where the request was not processed: a connection never opened, or 429/503.
    if exc is not None:
        return isinstance(exc, httpx.ConnectError)
    return response is not None and response.status_code in RETRY_STATUSES


def remember_write(response: httpx.Response, headers: httpx.Headers) -> None:
    """Carry the newest write position a response names on every later request: behind a load
    balancer, another server process then reads from a replica only once it holds this client's writes."""
    new = parse_lsn(response.headers.get(READ_AFTER_HEADER))
    if new and new > parse_lsn(headers.get(READ_AFTER_HEADER)):
        headers[READ_AFTER_HEADER] = lsn_text(new)


def _files(paths: Sequence[str | Path], field: str = "files") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (Path(p).name, _read(Path(p)), "application/octet-stream")) for p in paths]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:  # missing, a folder, no permission: the call's failure, said as one
        raise ClientError(f"cannot read {path}: {exc.strerror or exc}; nothing was sent") from None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call, described once: the sync and the async client only send it and parse the answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    ok: int = 200
    kwargs: dict[str, Any] = field(default_factory=dict)


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        try:
            return model.model_validate(response.json())
        except ValueError:  # not JSON, or not this API's (pydantic's ValidationError is a ValueError)
            request = response.request
            raise ClientError(
                f"{request.url.scheme}://{request.url.netloc.decode()} answered {request.method} "
                f"{request.url.path} with something that is not rag-server's API: is the URL rag-server's?",
                response.status_code,
            ) from None

    return parse


class _Calls:
    """Every call of the API (both clients' methods are thin wrappers of these)."""

    @staticmethod
    def health() -> Call[dict[str, Any]]:
        return Call("GET", "/health", lambda r: dict(r.json()))

    @staticmethod
    def status() -> Call[dict[str, Any]]:
        return Call("GET", "/status", lambda r: dict(r.json()))

    @staticmethod
    def search(query: str, params: dict[str, Any]) -> Call[SearchResponse]:
        return Call("POST", "/search", _model(SearchResponse), kwargs={"json": {"query": query, **params}})

    @staticmethod
    def query(query: str, params: dict[str, Any]) -> Call[QueryResponse]:
        return Call("POST", "/query", _model(QueryResponse), kwargs={"json": {"query": query, **params}})

    @staticmethod
    def check_duplicates(files: Sequence[tuple[str, str]], collection: str) -> Call[DuplicateCheckResult]:
        body = {"files": [{"filename": f, "sha256": s} for f, s in files], "collection": collection}
        return Call(
            "POST", "/documents/check-duplicates", _model(DuplicateCheckResult), kwargs={"json": body}
        )

    @staticmethod
    def upload(
        paths: Sequence[str | Path],
        collection: str,
        metadata: dict[str, Any] | None,
        file_metadata: dict[str, dict[str, Any]] | None,
        replace: bool,
    ) -> Call[UploadResponse]:
        form = {"collection": collection}
        if metadata is not None:  # {} is sent: a replaced document's metadata is cleared
            form["metadata"] = json.dumps(metadata)
        if file_metadata:
            form["file_metadata"] = json.dumps(file_metadata)
        if replace:
            form["replace"] = "true"
        kwargs = {"files": _files(paths), "data": form}
        return Call("POST", "/upload", _model(UploadResponse), ok=202, kwargs=kwargs)

    @staticmethod
    def replace_file(
        document_id: str, path: str | Path, metadata: dict[str, Any] | None
    ) -> Call[UploadResponse]:
        form = {"metadata": json.dumps(metadata)} if metadata is not None else {}
        kwargs = {"files": _files([path], "file"), "data": form}
        return Call("PUT", f"/documents/{document_id}/file", _model(UploadResponse), ok=202, kwargs=kwargs)

    @staticmethod
    def document(document_id: str) -> Call[Document]:
        return Call("GET", f"/documents/{document_id}", _model(Document))

    @staticmethod
    def documents(collection: str, params: dict[str, Any]) -> Call[DocumentList]:
        query = {"collection": collection, **{k: v for k, v in params.items() if v is not None}}
        if "metadata" in query:  # a JSON object in the query string
            query["metadata"] = json.dumps(query["metadata"])
        return Call("GET", "/documents", _model(DocumentList), kwargs={"params": query})

    @staticmethod
    def delete_document(document_id: str) -> Call[None]:
        return Call("DELETE", f"/documents/{document_id}", lambda _: None, ok=204)

    @staticmethod
    def delete_documents(
        collection: str, ids: Sequence[str] | None, metadata: dict[str, Any] | None
    ) -> Call[DeletedDocuments]:
        body: dict[str, Any] = {"collection": collection}
        if ids is not None:
            body["ids"] = [str(i) for i in ids]
        if metadata is not None:
            body["metadata"] = metadata
        return Call("POST", "/documents/delete", _model(DeletedDocuments), kwargs={"json": body})

    @staticmethod
    def update_metadata(document_id: str, metadata: dict[str, Any], mode: str) -> Call[Document]:
        body = {"metadata": metadata, "mode": mode}
        return Call("PATCH", f"/documents/{document_id}", _model(Document), kwargs={"json": body})

    @staticmethod
    def batch_status(batch_id: str) -> Call[BatchStatus]:
        return Call("GET", f"/tasks/{batch_id}/status", _model(BatchStatus))


class _Settings:
    def __init__(
        self, base_url: str, api_key: str | None, timeout: float, retries: int, backoff_s: float
    ) -> None:
        self.base_url = base_url.rstrip("/")
        key = api_key or os.environ.get("RAG_API_KEY") or None
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout, self.retries, self.backoff_s = timeout, retries, backoff_s

    def outcome(
        self, attempt: int, ok: int, response: httpx.Response | None, error: httpx.TransportError | None
    ) -> float | httpx.Response:
        """After one attempt: the seconds to wait before the next, or the response to return (raises a
        ClientError when the call failed for good)."""
        if attempt < self.retries and _retryable(response, error):
            return _delay(attempt, self.backoff_s, response)
        if error is not None:
            raise unreachable(self.base_url, error) from None
        assert response is not None
        if response.status_code != ok:
            raise failure(response)
        return response


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
        self._s = _Settings(base_url, api_key, timeout, retries, backoff_s)
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
        return self._send(_Calls.health())

    def status(self) -> dict[str, Any]:
        """GET /status: the server's version, this key's role, its upload limits (`upload`)."""
        return self._send(_Calls.status())

    def search(self, query: str, **params: Any) -> SearchResponse:
        """POST /search; `params`: search_type, top_k, collections, filters... (SearchRequest)."""
        return self._send(_Calls.search(query, params))

    def query(self, query: str, **params: Any) -> QueryResponse:
        """POST /query: a cited answer; `params`: session_id, collections, search_type..."""
        return self._send(_Calls.query(query, params))

    def check_duplicates(
        self, files: Sequence[tuple[str, str]], collection: str = "default"
    ) -> DuplicateCheckResult:
        """`files`: (filename, sha256 hex) pairs."""
        return self._send(_Calls.check_duplicates(files, collection))

    def upload(
        self,
        paths: Sequence[str | Path],
        collection: str = "default",
        *,
        metadata: dict[str, Any] | None = None,
        file_metadata: dict[str, dict[str, Any]] | None = None,
        replace: bool = False,
    ) -> UploadResponse:
        """POST /upload. `metadata`: every file's; `file_metadata`: by file name, on top; `replace`: a
        file named like a stored document of the collection replaces its file."""
        return self._send(_Calls.upload(paths, collection, metadata, file_metadata, replace))

    def replace_file(
        self, document_id: str, path: str | Path, *, metadata: dict[str, Any] | None = None
    ) -> UploadResponse:
        """PUT /documents/{id}/file: a new version of the document (same id) once processed."""
        return self._send(_Calls.replace_file(document_id, path, metadata))

    def document(self, document_id: str) -> Document:
        return self._send(_Calls.document(document_id))

    def documents(self, collection: str = "default", **params: Any) -> DocumentList:
        """GET /documents: a page of the collection's documents; `params`: limit, offset, sort, order,
        status, type, name (part of it), metadata (a dict every key of which must match)."""
        return self._send(_Calls.documents(collection, params))

    def delete_document(self, document_id: str) -> None:
        """DELETE /documents/{id}: the document, its bytes and its chunks."""
        self._send(_Calls.delete_document(document_id))

    def delete_documents(
        self,
        collection: str = "default",
        *,
        ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> DeletedDocuments:
        """POST /documents/delete: the collection's documents that `ids`, `metadata` or both name."""
        return self._send(_Calls.delete_documents(collection, ids, metadata))

    def update_metadata(self, document_id: str, metadata: dict[str, Any], mode: str = "replace") -> Document:
        """PATCH /documents/{id}: `replace` the metadata, or `merge` top-level keys (null removes one)."""
        return self._send(_Calls.update_metadata(document_id, metadata, mode))

    def batch_status(self, batch_id: str) -> BatchStatus:
        return self._send(_Calls.batch_status(batch_id))


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
        self._s = _Settings(base_url, api_key, timeout, retries, backoff_s)
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
        return await self._send(_Calls.health())

    async def status(self) -> dict[str, Any]:
        return await self._send(_Calls.status())

    async def search(self, query: str, **params: Any) -> SearchResponse:
        return await self._send(_Calls.search(query, params))

    async def query(self, query: str, **params: Any) -> QueryResponse:
        return await self._send(_Calls.query(query, params))

    async def check_duplicates(
        self, files: Sequence[tuple[str, str]], collection: str = "default"
    ) -> DuplicateCheckResult:
        return await self._send(_Calls.check_duplicates(files, collection))

    async def upload(
        self,
        paths: Sequence[str | Path],
        collection: str = "default",
        *,
        metadata: dict[str, Any] | None = None,
        file_metadata: dict[str, dict[str, Any]] | None = None,
        replace: bool = False,
    ) -> UploadResponse:
        return await self._send(_Calls.upload(paths, collection, metadata, file_metadata, replace))

    async def replace_file(
        self, document_id: str, path: str | Path, *, metadata: dict[str, Any] | None = None
    ) -> UploadResponse:
        return await self._send(_Calls.replace_file(document_id, path, metadata))

    async def document(self, document_id: str) -> Document:
        return await self._send(_Calls.document(document_id))

    async def documents(self, collection: str = "default", **params: Any) -> DocumentList:
        return await self._send(_Calls.documents(collection, params))

    async def delete_document(self, document_id: str) -> None:
        await self._send(_Calls.delete_document(document_id))

    async def delete_documents(
        self,
        collection: str = "default",
        *,
        ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> DeletedDocuments:
        return await self._send(_Calls.delete_documents(collection, ids, metadata))

    async def update_metadata(
        self, document_id: str, metadata: dict[str, Any], mode: str = "replace"
    ) -> Document:
        return await self._send(_Calls.update_metadata(document_id, metadata, mode))

    async def batch_status(self, batch_id: str) -> BatchStatus:
        return await self._send(_Calls.batch_status(batch_id))
