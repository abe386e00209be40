"""How `Client` and `AsyncClient` (client.py) say a request failed: `ClientError`, one sentence that says
what happened and what to do (a 422 as each refused field with its problem)."""

from __future__ import annotations

from typing import Any

import httpx


class ClientError(Exception):
    """A request that failed; the message is one sentence that says what happened and what to do.
    `code`: the API's stable name of the case when it gives one (`collection_not_found`): branch on it,
    not on the sentence."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(detail, list):  # a 422: the request's problems, each as `field: message`
        return "; ".join(_problem(item) for item in detail) or response.reason_phrase
    return str(detail)


def _problem(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    loc = list(error.get("loc") or [])
    field = ".".join(map(str, loc[1:] if loc[:1] in (["body"], ["query"], ["path"]) else loc))
    message = str(error.get("msg", "invalid"))  # the server already dropped pydantic's prefixes
    return f"{field}: {message}" if field else message


def failure(response: httpx.Response) -> ClientError:
    """What a response that is not a success says, as one sentence naming what to do."""
    status, where = response.status_code, f"{response.request.method} {response.request.url.path}"
    detail = _detail(response)
    if status == 401 and "authorization" in response.request.headers:
        message = f"the server refused the API key ({detail}): check RAG_API_KEY (or the client's api_key=)"
    elif status == 401:
        message = f"the server needs an API key ({detail}): set RAG_API_KEY (or the client's api_key=)"
    elif status == 403:
        message = f"the API key may not do {where}: {detail}"
    else:
        message = f"the server answered {status} to {where}: {detail}"
    return ClientError(message, status, _code(response))


def unreachable(base_url: str, exc: httpx.TransportError) -> ClientError:
    """A server that could not be reached, or did not answer in time, as one sentence."""
    if isinstance(exc, httpx.TimeoutException):
        return ClientError(f"the server at {base_url} did not answer in time ({type(exc).__name__})")
    return ClientError(
        f"cannot reach the server at {base_url} ({type(exc).__name__}): is it running (`just up`)?"
    )
