"""Every call of the rag-server API described once (method, path, arguments, how to read the answer):
what `client.Client` and `client.AsyncClient` send, each in its own way (sync, async)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from rag_server.access.models import ApiKey, KeyList
from rag_server.chat.models import QueryResponse, SessionList
from rag_server.client_errors import ClientError
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

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
# A key's collections in PATCH /keys: names or ids, "every" (all of them, new ones too), None (unchanged).
KeyReach = Sequence[str] | Literal["every"] | None


# A file to send: its path (sent under its own name), or (the document's name, its path): a name may
# hold folders ("setup/README.md"), which the server keeps.
FileToSend = str | Path | tuple[str, str | Path]


def _files(files: Sequence[FileToSend], field: str = "files") -> list[tuple[str, tuple[str, bytes, str]]]:
    named = [(f[0], Path(f[1])) if isinstance(f, tuple) else (Path(f).name, Path(f)) for f in files]
    return [(field, (name, _read(path), "application/octet-stream")) for name, path in named]


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


class Calls:
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
        paths: Sequence[FileToSend],
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
    def document(document_id: str) -> Call[DocumentDetail]:
        return Call("GET", f"/documents/{document_id}", _model(DocumentDetail))

    @staticmethod
    def documents(collection: str, params: dict[str, Any]) -> Call[DocumentList]:
        query = {"collection": collection, **{k: v for k, v in params.items() if v is not None}}
        for match in ("metadata", "text"):  # JSON objects in the query string
            if match in query:
                query[match] = json.dumps(query[match])
        return Call("GET", "/documents", _model(DocumentList), kwargs={"params": query})

    @staticmethod
    def chunks(
        document_id: str, offset: int, limit: int, text: dict[str, Any] | None
    ) -> Call[DocumentChunks]:
        query: dict[str, Any] = {"offset": offset, "limit": limit}
        if text is not None:
            query["text"] = json.dumps(text)
        return Call(
            "GET", f"/documents/{document_id}/chunks", _model(DocumentChunks), kwargs={"params": query}
        )

    @staticmethod
    def delete_document(document_id: str) -> Call[None]:
        return Call("DELETE", f"/documents/{document_id}", lambda _: None, ok=204)

    @staticmethod
    def delete_documents(
        collection: str,
        ids: Sequence[str] | None,
        metadata: dict[str, Any] | None,
        text: dict[str, Any] | None,
        expected_count: int | None = None,
    ) -> Call[DeletedDocuments]:
        body = _selection(collection, ids, metadata, text, expected_count)
        return Call("POST", "/documents/delete", _model(DeletedDocuments), kwargs={"json": body})

    @staticmethod
    def update_matching(
        collection: str,
        values: dict[str, Any],
        mode: str,
        # ids, metadata, text, expected_count
        selection: tuple[Sequence[str] | None, dict[str, Any] | None, dict[str, Any] | None, int | None],
    ) -> Call[UpdatedDocuments]:
        body = {**_selection(collection, *selection), "set": values, "mode": mode}
        return Call("POST", "/documents/metadata/matching", _model(UpdatedDocuments), kwargs={"json": body})

    @staticmethod
    def update_metadata(
        document_id: str, metadata: dict[str, Any], mode: str, expected: dict[str, Any] | None = None
    ) -> Call[Document]:
        body: dict[str, Any] = {"metadata": metadata, "mode": mode}
        if expected is not None:
            body["expected_metadata"] = expected
        return Call("PATCH", f"/documents/{document_id}", _model(Document), kwargs={"json": body})

    @staticmethod
    def update_documents(
        collection: str, metadata: Mapping[str, dict[str, Any]], mode: str
    ) -> Call[UpdatedDocuments]:
        documents = [{"id": str(i), "metadata": m} for i, m in metadata.items()]
        body = {"collection": collection, "documents": documents, "mode": mode}
        return Call("POST", "/documents/metadata", _model(UpdatedDocuments), kwargs={"json": body})

    @staticmethod
    def chat_sessions(q: str | None, params: dict[str, Any]) -> Call[SessionList]:
        query = {k: v for k, v in {"q": q, **params}.items() if v is not None}
        return Call("GET", "/chat/sessions", _model(SessionList), kwargs={"params": query})

    @staticmethod
    def batch_status(batch_id: str) -> Call[BatchStatus]:
        return Call("GET", f"/tasks/{batch_id}/status", _model(BatchStatus))

    @staticmethod
    def tasks(params: dict[str, Any]) -> Call[AdminTaskList]:
        query = {k: v for k, v in params.items() if v is not None}
        return Call("GET", "/admin/tasks", _model(AdminTaskList), kwargs={"params": query})

    @staticmethod
    def retry_tasks(batch_id: str | None, collection: str | None, every: bool) -> Call[BulkTaskResult]:
        body: dict[str, Any] = {"batch_id": batch_id, "collection": collection}
        body = {k: str(v) for k, v in body.items() if v is not None}
        if every:
            body["all"] = True
        return Call("POST", "/admin/tasks/retry", _model(BulkTaskResult), kwargs={"json": body})

    @staticmethod
    def keys(include_revoked: bool, limit: int, offset: int) -> Call[KeyList]:
        query: dict[str, Any] = {"limit": limit, "offset": offset}
        if include_revoked:
            query["include_revoked"] = "true"
        return Call("GET", "/keys", _model(KeyList), kwargs={"params": query})

    @staticmethod
    def update_key(name: str, role: str | None, collections: KeyReach) -> Call[ApiKey]:
        body: dict[str, Any] = {}
        if role is not None:
            body["role"] = role
        if collections == "every":
            body["collections"] = None  # null: every collection (left out: the key's own stay)
        elif collections is not None:
            body["collections"] = list(collections)
        path = f"/keys/{quote(name, safe='')}"
        return Call("PATCH", path, _model(ApiKey), kwargs={"json": body})


def _selection(
    collection: str,
    ids: Sequence[str] | None,
    metadata: dict[str, Any] | None,
    text: dict[str, Any] | None,
    expected_count: int | None = None,
) -> dict[str, Any]:
    """The body of a selection of documents (POST /documents/delete, /documents/metadata/matching)."""
    body: dict[str, Any] = {"collection": collection}
    if ids is not None:
        body["ids"] = [str(i) for i in ids]
    if metadata is not None:
        body["metadata"] = metadata
    if text is not None:
        body["text"] = text
    if expected_count is not None:
        body["expected_count"] = expected_count
    return body
