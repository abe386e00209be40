"""The client's retry and error policy, against a transport that answers as a server would (the real
server is exercised in tests/integration/test_client.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from rag_server.client import AsyncClient, Client, ClientError
from rag_server.read_after import READ_AFTER_HEADER, lsn_text, parse_lsn

HEALTH = {"status": "ok"}


def flaky(statuses: list[int], seen: list[httpx.Request]) -> httpx.MockTransport:
    """Answers each request with the next status (503s first), then 200."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = statuses.pop(0) if statuses else 200
        body = HEALTH if status == 200 else {"detail": "the database is unavailable, retry shortly"}
        return httpx.Response(status, json=body, headers={"Retry-After": "0"} if status == 429 else {})

    return httpx.MockTransport(answer)


def test_503_and_429_are_retried_then_succeed() -> None:
    seen: list[httpx.Request] = []
    with Client("http://rag", transport=flaky([503, 429], seen), backoff_s=0) as client:
        assert client.health() == HEALTH
    assert len(seen) == 3


def test_retries_run_out_into_one_sentence() -> None:
    seen: list[httpx.Request] = []
    client = Client("http://rag", transport=flaky([503] * 10, seen), retries=2, backoff_s=0)
    with client, pytest.raises(ClientError, match="answered 503 to GET /health: the database") as err:
        client.health()
    assert err.value.status == 503 and len(seen) == 3


def test_a_refused_key_says_how_to_send_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_API_KEY", "rag_from_env")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, json={"detail": "the API key is not valid"})

    client = Client("http://rag", transport=httpx.MockTransport(answer))
    # A key was sent: the server refused it (it said the server "needs an API key").
    with (
        client,
        pytest.raises(
            ClientError,
            match=r"^the server refused the API key \(the API key is not valid\): check RAG_API_KEY \(",
        ),
    ):
        client.search("x")
    assert seen[0].headers["authorization"] == "Bearer rag_from_env"
    assert len(seen) == 1  # a 401 is not retried
    monkeypatch.delenv("RAG_API_KEY")
    keyless = Client("http://rag", transport=httpx.MockTransport(answer))
    with (
        keyless,
        pytest.raises(
            ClientError, match=r"needs an API key .*: set RAG_API_KEY \(or the client.s api_key=\)$"
        ),
    ):
        keyless.search("x")


def test_an_unreachable_server_is_one_sentence() -> None:
    client = Client("http://127.0.0.1:9", retries=1, backoff_s=0)
    with client, pytest.raises(ClientError, match=r"cannot reach the server at http://127.0.0.1:9 .*just up"):
        client.health()


async def test_the_async_client_retries_the_same_way() -> None:
    seen: list[httpx.Request] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = 503 if len(seen) == 1 else 200
        return httpx.Response(status, json=HEALTH if status == 200 else {"detail": "busy"})

    async with AsyncClient(
        "http://rag", api_key="rag_k", transport=httpx.MockTransport(answer), backoff_s=0
    ) as c:
        assert await c.health() == HEALTH
    assert len(seen) == 2 and seen[1].headers["authorization"] == "Bearer rag_k"


def positions(answers: list[str | None], seen: list[httpx.Request]) -> httpx.MockTransport:
    """Answers each request with the next X-Rag-Read-After value (None: no header)."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        token = answers.pop(0) if answers else None
        return httpx.Response(200, json=HEALTH, headers={READ_AFTER_HEADER: token} if token else {})

    return httpx.MockTransport(answer)


def test_the_newest_write_position_is_sent_back_on_every_later_request() -> None:
    seen: list[httpx.Request] = []
    # 0/FF00 is older than 1/10 although it sorts after it as text; a bad token is no position.
    answers = [None, "1/10", None, "0/FF00", "bad", "2/0", None]
    with Client("http://rag", transport=positions(answers, seen)) as client:
        for _ in range(7):
            client.health()
    sent = [r.headers.get(READ_AFTER_HEADER) for r in seen]
    assert sent == [None, None, "1/10", "1/10", "1/10", "1/10", "2/0"]


async def test_the_async_client_carries_the_write_position_too() -> None:
    seen: list[httpx.Request] = []
    async with AsyncClient("http://rag", transport=positions(["A/1", None], seen)) as client:
        await client.health()
        await client.health()
    assert seen[1].headers[READ_AFTER_HEADER] == "A/1"


def test_the_token_format_round_trips() -> None:
    for lsn in (0x16B374D848, 1, 0xFFFFFFFF_FFFFFFFF):
        assert parse_lsn(lsn_text(lsn)) == lsn
    assert lsn_text(0x16B374D848) == "16/B374D848"
    for bad in (None, "", "16", "x/1", "123456789/0", "-1/0"):
        assert parse_lsn(bad) == 0


def test_a_file_that_cannot_be_read_is_one_sentence_and_nothing_is_sent(tmp_path: Path) -> None:
    # It was FileNotFoundError's traceback (or IsADirectoryError's) out of a call said to fail as one.
    seen: list[httpx.Request] = []
    with Client("http://rag", transport=flaky([], seen)) as client:
        with pytest.raises(ClientError, match=r"^cannot read .*missing\.pdf: No such file or directory"):
            client.upload([tmp_path / "missing.pdf"])
        with pytest.raises(ClientError, match=r"^cannot read .*: Is a directory; nothing was sent$"):
            client.upload([tmp_path])
    assert not seen


def test_a_url_that_is_not_rag_servers_says_so() -> None:
    # Another web server on that port answers 200 with its HTML: that was a JSONDecodeError's traceback.
    page = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>router admin</html>"))
    with Client("http://192.168.1.1", transport=page) as client, pytest.raises(ClientError) as err:
        client.document("3f2a")
    assert str(err.value) == (
        "http://192.168.1.1 answered GET /documents/3f2a with something that is not rag-server's API: "
        "is the URL rag-server's?"
    )
