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
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from rag_server.chat.models import QueryResponse
from rag_server.ingestion.models import BatchStatus, Document, DuplicateCheckResult, UploadResponse
from rag_server.retrieval.models import SearchResponse

DEFAULT_URL = "http://127.0.0.1:8000"
# Statuses that say "not processed, try again": a proxy's rate limit, our database being unavailable.
RETRY_STATUSES = frozenset({429, 503})


class ClientError(Exception):
    """A request that failed; the message is one sentence that says what happened and what to do."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:200] or response.reason_phrase
    return str(detail)


def _failure(response: httpx.Response) -> ClientError:
    status, where = response.status_code, f"{response.request.method} {response.request.url.path}"
    detail = _detail(response)
    if status == 401:
        message = f"the server needs an API key ({detail}): pass api_key= or set RAG_API_KEY"
    elif status == 403:
        message = f"the API key may not do {where}: {detail}"
    else:
        message = f"the server answered {status} to {where}: {detail}"
    return ClientError(message, status)


def _unreachable(base_url: str, exc: httpx.TransportError) -> ClientError:
    if isinstance(exc, httpx.TimeoutException):
        return ClientError(f"the server at {base_url} did not answer in time ({type(exc).__name__})")
    return ClientError(
        f"cannot reach the server at {base_url} ({type(exc).__name__}): is it running (`just up`)?"
    )


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


def _files(paths: Sequence[str | Path], field: str = "files") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (Path(p).name, Path(p).read_bytes(), "application/octet-stream")) for p in paths]


def _upload_form(
    collection: str,
    metadata: dict[str, Any] | None,
    file_metadata: dict[str, dict[str, Any]] | None,
    replace: bool,
) -> dict[str, str]:
    """POST /upload's text fields: metadata for every file, per file name, and the replace flag."""
    form = {"collection": collection}
    if metadata:
        form["metadata"] = json.dumps(metadata)
    if file_metadata:
        form["file_metadata"] = json.dumps(file_metadata)
    if replace:
        form["replace"] = "true"
    return form


def _file_form(metadata: dict[str, Any] | None) -> dict[str, str]:
    return {"metadata": json.dumps(metadata)} if metadata is not None else {}


class _Settings:
    def __init__(
        self, base_url: str, api_key: str | None, timeout: float, retries: int, backoff_s: float
    ) -> None:
        self.base_url = base_url.rstrip("/")
        key = api_key or os.environ.get("RAG_API_KEY") or None
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout, self.retries, self.backoff_s = timeout, retries, backoff_s


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
            if attempt < self._s.retries and _retryable(response, error):
                time.sleep(_delay(attempt, self._s.backoff_s, response))
                continue
            if error is not None:
                raise _unreachable(self._s.base_url, error) from None
            assert response is not None
            if response.status_code != ok:
                raise _failure(response)
            return response
        raise AssertionError("unreachable")

    def health(self) -> dict[str, Any]:
        return dict(self.request("GET", "/health").json())

    def search(self, query: str, **params: Any) -> SearchResponse:
        """POST /search; `params`: search_type, top_k, collections, filters... (SearchRequest)."""
        return SearchResponse.model_validate(
            self.request("POST", "/search", json={"query": query, **params}).json()
        )

    def query(self, query: str, **params: Any) -> QueryResponse:
        """POST /query: a cited answer; `params`: session_id, collections, search_type..."""
        return QueryResponse.model_validate(
            self.request("POST", "/query", json={"query": query, **params}).json()
        )

    def check_duplicates(
        self, files: Sequence[tuple[str, str]], collection: str = "default"
    ) -> DuplicateCheckResult:
        """`files`: (filename, sha256 hex) pairs."""
        body = {"files": [{"filename": f, "sha256": s} for f, s in files], "collection": collection}
        return DuplicateCheckResult.model_validate(
            self.request("POST", "/documents/check-duplicates", json=body).json()
        )

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
        data = _upload_form(collection, metadata, file_metadata, replace)
        response = self.request("POST", "/upload", ok=202, files=_files(paths), data=data)
        return UploadResponse.model_validate(response.json())

    def replace_file(
        self, document_id: str, path: str | Path, *, metadata: dict[str, Any] | None = None
    ) -> UploadResponse:
        """PUT /documents/{id}/file: a new version of the document (same id) once processed."""
        response = self.request(
            "PUT",
            f"/documents/{document_id}/file",
            ok=202,
            files=_files([path], "file"),
            data=_file_form(metadata),
        )
        return UploadResponse.model_validate(response.json())

    def document(self, document_id: str) -> Document:
        return Document.model_validate(self.request("GET", f"/documents/{document_id}").json())

    def update_metadata(self, document_id: str, metadata: dict[str, Any], mode: str = "replace") -> Document:
        """PATCH /documents/{id}: `replace` the metadata, or `merge` top-level keys (null removes one)."""
        body = {"metadata": metadata, "mode": mode}
        return Document.model_validate(self.request("PATCH", f"/documents/{document_id}", json=body).json())

    def batch_status(self, batch_id: str) -> BatchStatus:
        return BatchStatus.model_validate(self.request("GET", f"/tasks/{batch_id}/status").json())


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
            if attempt < self._s.retries and _retryable(response, error):
                await asyncio.sleep(_delay(attempt, self._s.backoff_s, response))
                continue
            if error is not None:
                raise _unreachable(self._s.base_url, error) from None
            assert response is not None
            if response.status_code != ok:
                raise _failure(response)
            return response
        raise AssertionError("unreachable")

    async def health(self) -> dict[str, Any]:
        return dict((await self.request("GET", "/health")).json())

    async def search(self, query: str, **params: Any) -> SearchResponse:
        response = await self.request("POST", "/search", json={"query": query, **params})
        return SearchResponse.model_validate(response.json())

    async def query(self, query: str, **params: Any) -> QueryResponse:
        response = await self.request("POST", "/query", json={"query": query, **params})
        return QueryResponse.model_validate(response.json())

    async def upload(
        self,
        paths: Sequence[str | Path],
        collection: str = "default",
        *,
        metadata: dict[str, Any] | None = None,
        file_metadata: dict[str, dict[str, Any]] | None = None,
        replace: bool = False,
    ) -> UploadResponse:
        data = _upload_form(collection, metadata, file_metadata, replace)
        response = await self.request("POST", "/upload", ok=202, files=_files(paths), data=data)
        return UploadResponse.model_validate(response.json())

    async def replace_file(
        self, document_id: str, path: str | Path, *, metadata: dict[str, Any] | None = None
    ) -> UploadResponse:
        response = await self.request(
            "PUT",
            f"/documents/{document_id}/file",
            ok=202,
            files=_files([path], "file"),
            data=_file_form(metadata),
        )
        return UploadResponse.model_validate(response.json())

    async def document(self, document_id: str) -> Document:
        return Document.model_validate((await self.request("GET", f"/documents/{document_id}")).json())

    async def update_metadata(
        self, document_id: str, metadata: dict[str, Any], mode: str = "replace"
    ) -> Document:
        body = {"metadata": metadata, "mode": mode}
        response = await self.request("PATCH", f"/documents/{document_id}", json=body)
        return Document.model_validate(response.json())

    async def batch_status(self, batch_id: str) -> BatchStatus:
        return BatchStatus.model_validate((await self.request("GET", f"/tasks/{batch_id}/status")).json())
