"""Read routing decisions (infra/replicas.py) without a database: which replica is usable, what counts
as a write, how replicas are named; RAG_READ_DATABASE_URLS and RAG_EMBEDDED_LISTEN parsing. The real
behaviour against a streaming standby is tests/integration/test_read_replicas.py."""

from __future__ import annotations

import time
from typing import Any, cast
from uuid import uuid4

import pytest

from rag_server.api.read_routing import may_write, writes
from rag_server.config import Settings
from rag_server.infra.embedded_postgres import parse_listen
from rag_server.infra.replicas import ReadRouting, Replica, ReplicaPool, describe
from rag_server.infra.scoped_pool import DbScope, ScopedPool


class _Pool:
    """Stands in for a pool: routing only compares identities."""

    replica: Any = None

    def __init__(self, name: str) -> None:
        self.name = name


def routing(replicas: int = 2, max_lag_s: float = 5.0) -> ReadRouting:
    pools = [
        (f"postgresql://u:secret@r{i}:5432/db", cast(ReplicaPool, _Pool(f"r{i}"))) for i in range(replicas)
    ]
    return ReadRouting(
        cast(ScopedPool, _Pool("primary")), pools, max_lag_s=max_lag_s, interval_s=1.0, timeout_s=1.0
    )


def up(replica: Replica, replayed: int, caught_up_ago: float) -> None:
    replica.up, replica.replayed, replica.caught_up_at = True, replayed, time.monotonic() - caught_up_ago


KEY = DbScope(collections=None, role="editor", key_id=uuid4())


def test_outside_a_request_and_with_no_usable_replica_reads_go_to_the_primary() -> None:
    r = routing()
    assert r.pool_for(None) is r.primary
    assert r.pool_for(KEY) is r.primary  # never checked yet
    up(r.replicas[0], 100, 0.5)
    assert r.pool_for(None) is r.primary
    assert r.pool_for(KEY) is r.replicas[0].pool


def test_replicas_take_turns_and_a_lagging_or_down_one_is_skipped() -> None:
    r = routing()
    up(r.replicas[0], 100, 0.5)
    up(r.replicas[1], 100, 0.5)
    assert {r.pool_for(KEY) for _ in range(4)} == {r.replicas[0].pool, r.replicas[1].pool}
    up(r.replicas[1], 100, 6.0)  # beyond the 5 s bound
    r.replicas[0].up = False
    assert r.pool_for(KEY) is r.primary
    assert r.routed["primary"] >= 1 and r.routed["replica"] >= 4


def test_a_writer_waits_for_a_replica_that_replayed_its_write() -> None:
    r = routing(replicas=1)
    up(r.replicas[0], 100, 0.1)
    r._floors[KEY.key_id] = (150, time.monotonic())
    assert r.pool_for(KEY) is r.primary
    other = DbScope(collections=None, role="editor", key_id=uuid4())
    assert r.pool_for(other) is r.replicas[0].pool
    r.replicas[0].replayed = 150
    assert r.pool_for(KEY) is r.replicas[0].pool
    # Older than the lag bound: any usable replica holds the write, whatever its position says.
    r._floors[KEY.key_id] = (10**12, time.monotonic() - 6.0)
    assert r.pool_for(KEY) is r.replicas[0].pool


def test_status_says_degraded_and_never_shows_a_password() -> None:
    r = routing()
    up(r.replicas[0], 100, 0.1)
    ok, sentence = r.summary()
    assert not ok and sentence.startswith("degraded: 1 of 2 healthy")
    assert "secret" not in sentence and "r1:5432/db" in sentence
    up(r.replicas[1], 100, 0.1)
    assert r.summary() == (True, "2 of 2 healthy")


def test_describe_drops_the_credentials() -> None:
    assert describe("postgresql://rag:pw@db.example:6432/rag") == "db.example:6432/rag"
    assert describe("postgresql://db/rag") == "db:5432/rag"


@pytest.mark.parametrize(
    ("method", "path", "writes"),
    [
        ("GET", "/documents", False),
        ("POST", "/search", False),
        ("POST", "/mcp/", False),
        ("POST", "/v1/chat/completions", False),
        ("POST", "/v1/responses", True),  # unless its body says `"store": false`: see below
        ("POST", "/upload", True),
        ("POST", "/query/stream", True),
        ("PATCH", "/documents/x", True),
        ("DELETE", "/chat/sessions/x", True),
    ],
)
def test_what_counts_as_a_write(method: str, path: str, writes: bool) -> None:
    assert may_write(method, path) is writes


@pytest.mark.parametrize(
    ("body", "writing"),
    [
        (b'{"model": "rag:a", "input": "q", "store": false}', False),
        (b'{"model": "rag:a", "input": "q"}', True),  # OpenAI's default: stored
        (b'{"model": "rag:a", "input": "q", "store": true}', True),
        (b'{"store": "false"}', True),  # not a boolean: refused (400), never read-only by mistake
        (b"[1]", True),
        (b"{not json", True),
        (b"[" * 100_000, True),
    ],
)
async def test_a_response_writes_unless_its_body_says_store_false(body: bytes, writing: bool) -> None:
    half = len(body) // 2
    messages = [
        {"type": "http.request", "body": body[:half], "more_body": True},
        {"type": "http.request", "body": body[half:], "more_body": False},
    ]
    pending = list(messages)

    async def receive() -> dict[str, object]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/v1/responses"}
    decided, replay = await writes(scope, receive)
    assert decided is writing
    assert [await replay() for _ in messages] == messages  # the app reads the same body
    assert await replay() == {"type": "http.disconnect"}
    # Any other request is decided by its method and path alone, its body left to the app.
    for method, path, expected in (("GET", "/v1/responses/x", False), ("DELETE", "/v1/responses/x", True)):
        decided, same = await writes({"type": "http", "method": method, "path": path}, receive)
        assert decided is expected and same is receive


def test_replica_urls_and_listen_address_settings() -> None:
    s = Settings(read_database_urls=" postgresql://a/db , ,postgresql://b/db")
    assert s.read_replica_urls == ["postgresql://a/db", "postgresql://b/db"]
    assert Settings().read_replica_urls == []
    assert parse_listen("") is None
    assert parse_listen("127.0.0.1:5433") == ("127.0.0.1", 5433)
    for bad in ("5433", "127.0.0.1:", "127.0.0.1:99999", "host:port"):
        with pytest.raises(ValueError):
            parse_listen(bad)


async def test_two_writes_finishing_out_of_order_keep_the_later_floor() -> None:
    """Write A reads its position after write B: the floor keeps B's higher position AND the later time."""
    r = routing(replicas=1)
    answers = iter([200, 100])  # B's position comes back first, A's (lower) second

    class _Raw:
        async def fetchval(self, sql: str) -> int:
            return next(answers)

    r.primary.raw = cast(Any, _Raw())  # type: ignore[misc]
    assert await r.record_write(KEY) == 200
    _, first_at = r._floors[KEY.key_id]
    assert await r.record_write(KEY) == 100
    assert r._floors[KEY.key_id][0] == 200 and r._floors[KEY.key_id][1] >= first_at
    up(r.replicas[0], replayed=150, caught_up_ago=0)
    assert r.pool_for(KEY) is r.primary  # 150 < 200: not yet


def test_a_bad_listen_address_never_reaches_the_shell() -> None:
    for bad in ("127.0.0.1; rm -rf /:5433", "$(id):5433", "a b:5433"):
        with pytest.raises(ValueError, match="RAG_EMBEDDED_LISTEN"):
            parse_listen(bad)
    assert parse_listen("[::1]:5433") == ("::1", 5433)
