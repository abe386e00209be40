"""How the API clients (client.py) retry and carry their writes' positions: a call is tried again only when
the server did not process it (a connection never opened, 429, 503), after `Retry-After` or an exponential
backoff; the newest write position a response names goes on every later request (read_after.py)."""

from __future__ import annotations

import os

import httpx

from rag_server.client_errors import failure, unreachable
from rag_server.read_after import READ_AFTER_HEADER, lsn_text, parse_lsn

# Statuses that say "not processed, try again": a proxy's rate limit, our database being unavailable.
RETRY_STATUSES = frozenset({429, 503})


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


class RetrySettings:
    """A client's URL, key and retry policy; `outcome` judges each attempt."""

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
