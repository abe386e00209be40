"""Read replicas (RAG_READ_DATABASE_URLS): which pool a read-only call may use.

Each replica gets a `ReplicaPool`, a ScopedPool opened like the primary's (as the runtime role, so
row-level security applies the same way). `ReadRouting.pool_for(scope)` is the one seam: it answers a
replica that is up, in recovery, within RAG_READ_REPLICA_MAX_LAG_S of the primary and has replayed the
principal's own last write; otherwise the primary.

Lag is measured in WAL positions, not replay timestamps (an idle primary commits nothing, so the
replay timestamp stops while the replica is fully caught up): every check samples the primary's flushed
position, and a replica that has replayed sample (t, lsn) holds everything committed before t. Its
staleness is `now - t`, so it grows by itself between checks when replay stalls.

Read-your-writes: after a write request (api/read_routing.py) the primary's flushed position is
remembered for the principal (its API key; the open, keyless mode is one principal). Every replica that
passes the lag bound has replayed everything older than the bound, so a remembered position is dropped
after it. The memory is per server process (docs: "Read replicas and remote workers").

A read that fails on a replica while it runs (the replica went away, or recovery cancelled the query to
replay a conflicting change) answers 503; a request that writes nothing is then run once more, on the
primary, before any of its response is sent (api/read_routing.py), and so is an MCP tool call
(read_again_on_primary).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, AsyncExitStack, asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg

from rag_server.infra.database import is_transient_db_error
from rag_server.infra.scoped_pool import DbScope, Isolation, ScopedPool, request_scope

logger = logging.getLogger(__name__)
T = TypeVar("T")
V = TypeVar("V")

# Flushed, not inserted: a standby receives only flushed WAL, and a synchronous commit has flushed its
# commit record before the client hears of it.
PRIMARY_SQL = "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint"
# A write's floor: the insert position is at or past its commit record even with synchronous_commit off.
WRITE_SQL = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
REPLICA_SQL = (
    "SELECT pg_is_in_recovery() AS recovering, (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS replayed"
)
# A write whose position could not be read: the principal reads from the primary for the lag bound.
_UNKNOWN_LSN = 2**63 - 1
# The position the current request's client says it has written up to (READ_AFTER_HEADER; 0: none),
# set by api/read_routing.py so every read_pool() caller honours it, routes and MCP tools.
_read_after: ContextVar[int] = ContextVar("rag_read_after", default=0)


@dataclass
class ReadAttempt:
    """One run of a read-only request: whether a replica failed under it, or it runs on the primary."""

    on_primary: bool = False
    replica_failed: bool = False


# Set by api/read_routing.py for a request that writes nothing. A holder rather than a flag: the pool
# marks it from wherever the read ran (a copied context too), and the middleware sees the mark.
_attempt: ContextVar[ReadAttempt | None] = ContextVar("rag_read_attempt", default=None)


def describe(url: str) -> str:
    """host:port/database of a URL: never its user or password (logs, /health/ready, doctor)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path or '/'}"


@dataclass
class Replica:
    index: int
    where: str
    pool: ReplicaPool
    up: bool = False
    detail: str = "not checked yet"
    replayed: int = 0
    # time.monotonic() of the newest primary sample this replica had replayed at its last check.
    caught_up_at: float | None = None

    def staleness(self, now: float) -> float | None:
        return None if self.caught_up_at is None else max(0.0, now - self.caught_up_at)

    def usable(self, now: float, max_lag: float, floor: int) -> bool:
        stale = self.staleness(now)
        return self.up and stale is not None and stale <= max_lag and self.replayed >= floor


@contextmanager
def _bound(var: ContextVar[V], value: V) -> Iterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def reading_after(lsn: int) -> AbstractContextManager[None]:
    """Reads in this block are served only where `lsn` (the client's READ_AFTER_HEADER) is replayed."""
    return _bound(_read_after, lsn)


def read_attempt(attempt: ReadAttempt) -> AbstractContextManager[None]:
    """Reads in this block mark `attempt` when a replica fails under them, or run on the primary."""
    return _bound(_attempt, attempt)


async def read_again_on_primary(read: Callable[[], Awaitable[T]]) -> T:
    """Run the read-only call `read`; when it fails after a replica failed under it, run it once more
    with every read on the primary. For reads that answer errors in a body of their own, where
    ReadRoutingMiddleware sees no 503 (an MCP tool call)."""
    attempt = ReadAttempt()
    try:
        with read_attempt(attempt):
            return await read()
    except Exception:
        if not attempt.replica_failed:
            raise
    with read_attempt(ReadAttempt(on_primary=True)):
        return await read()


class ReplicaPool(ScopedPool):
    """A replica's scoped pool that hands out a primary connection instead when the replica cannot be
    reached (it went down since the last check): the read still answers, the replica is marked down.
    A read that fails on the replica's connection marks the request's ReadAttempt, so that a request
    that writes nothing is run again on the primary."""

    def __init__(self, raw: asyncpg.Pool, default: DbScope | None, primary: ScopedPool) -> None:
        super().__init__(raw, default, primary.timeout)
        self.primary = primary
        self.replica: Replica | None = None
        self.routed: dict[str, int] = {"fallback": 0}  # ReadRouting's counters once it owns this pool

    def has_free_connection(self) -> bool:
        # Never: an unreachable replica hands out the primary's connections, which may all be taken.
        return False

    @asynccontextmanager
    async def acquire(
        self,
        *,
        isolation: Isolation | None = None,
        readonly: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> AsyncIterator[asyncpg.Connection]:
        options: dict[str, Any] = {"isolation": isolation, "readonly": readonly, "settings": settings}
        conn: asyncpg.Connection | None = None
        block_done = False
        try:
            async with AsyncExitStack() as stack:
                try:
                    conn = await stack.enter_async_context(super().acquire(**options))
                except Exception as exc:
                    if not is_transient_db_error(exc):
                        raise
                    self._mark_down(exc)
                    self.routed["fallback"] += 1
                    logger.warning("read replica %s unreachable, reading from the primary", self._index())
                if conn is None:
                    yield await stack.enter_async_context(self.primary.acquire(**options))
                    return
                try:
                    yield conn
                except Exception as exc:
                    self._read_failed(exc, conn.is_closed())  # the connection can still tell
                    raise
                block_done = True
        except Exception as exc:
            if block_done:  # COMMIT or the pool's reset failed, the connection already back in the pool
                self._read_failed(exc, _connection_lost(exc))
            raise

    def _read_failed(self, exc: Exception, lost: bool) -> None:
        """When the replica failed the read (a transient error from its server: recovery cancelled the
        query, it is shutting down; or its connection is gone; not a timeout or a connection error of
        other code inside the block), mark the request's attempt for a run on the primary. A replica
        whose connection died is down until a check finds it up (a cancelled query leaves it up)."""
        if not is_transient_db_error(exc) or not (lost or isinstance(exc, asyncpg.PostgresError)):
            return
        if lost:
            self._mark_down(exc)
        attempt = _attempt.get()
        if attempt is not None:
            attempt.replica_failed = True
        logger.warning(
            "a read on replica %s failed (%s%s)%s",
            self._index(),
            type(exc).__name__,
            ": connection lost" if lost else "",
            ": running the request again on the primary" if attempt is not None else "",
        )

    def _mark_down(self, exc: Exception) -> None:
        if self.replica is not None:
            self.replica.up, self.replica.detail = False, f"unreachable ({type(exc).__name__})"

    def _index(self) -> int | None:
        return None if self.replica is None else self.replica.index


def _connection_lost(exc: Exception) -> bool:
    """Whether an error says the connection (or its server) is gone, once the connection cannot say."""
    if not isinstance(exc, asyncpg.PostgresError):
        return True
    return isinstance(exc, asyncpg.PostgresConnectionError) or str(exc.sqlstate).startswith("57P")


@dataclass(frozen=True)
class ReplicaStatus:
    index: int
    where: str
    healthy: bool
    lag_s: float | None
    detail: str


class ReadRouting:
    """The replicas of one Runtime, their health, and where each principal's reads go."""

    def __init__(
        self,
        primary: ScopedPool,
        pools: Sequence[tuple[str, ReplicaPool]],
        *,
        max_lag_s: float,
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self.primary = primary
        self.replicas = [Replica(i, describe(url), pool) for i, (url, pool) in enumerate(pools)]
        self.max_lag_s, self.interval_s, self.timeout_s = max_lag_s, interval_s, timeout_s
        self._samples: deque[tuple[float, int]] = deque()
        # principal (API key id; None: the open mode) -> (WAL position after its last write, when)
        self._floors: dict[UUID | None, tuple[int, float]] = {}
        self._turn = itertools.count()
        # "fallback": sent to a replica that could not be reached, so run on the primary after all;
        # "rerun": run again on the primary after a replica failed under the first run.
        self.routed = {"primary": 0, "replica": 0, "fallback": 0, "rerun": 0}
        for replica in self.replicas:
            replica.pool.replica, replica.pool.routed = replica, self.routed

    # --- routing -------------------------------------------------------------------------------

    def pool_for(self, scope: DbScope | None, after: int = 0) -> ScopedPool:
        """Where this principal's read-only call may run (None: outside a request, the primary).
        `after`: a WAL position the client says it has written up to (READ_AFTER_HEADER)."""
        if scope is None or not self.replicas:
            return self.primary
        now = time.monotonic()
        floor = max(self._floor(scope.key_id, now), after)
        usable = [r for r in self.replicas if r.usable(now, self.max_lag_s, floor)]
        if not usable:
            self.routed["primary"] += 1
            return self.primary
        self.routed["replica"] += 1
        return usable[next(self._turn) % len(usable)].pool

    def current_pool(self) -> ScopedPool:
        attempt = _attempt.get()
        if attempt is not None and attempt.on_primary:
            self.routed["rerun"] += 1
            return self.primary
        return self.pool_for(request_scope(), _read_after.get())

    def _floor(self, key: UUID | None, now: float) -> int:
        lsn, at = self._floors.get(key, (0, 0.0))
        # A usable replica has replayed everything older than the lag bound: the write is in it.
        return lsn if now - at <= self.max_lag_s else 0

    async def record_write(self, scope: DbScope | None) -> int | None:
        """Remember the primary's position after `scope`'s principal wrote (before its response ends);
        returns it (None: unknown)."""
        if scope is None or not self.replicas:
            return None
        at = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                lsn = int(await self.primary.raw.fetchval(WRITE_SQL))
        except Exception as exc:  # the write is done: never fail its response for the bookkeeping
            logger.warning("could not read the primary's WAL position after a write: %s", type(exc).__name__)
            lsn = _UNKNOWN_LSN
        # Two writes of one key can finish in any order: keep the higher position AND the later time.
        previous_lsn, previous_at = self._floors.get(scope.key_id, (0, 0.0))
        self._floors[scope.key_id] = (max(lsn, previous_lsn), max(at, previous_at))
        return None if lsn == _UNKNOWN_LSN else lsn

    # --- health --------------------------------------------------------------------------------

    async def check(self) -> None:
        """One round: sample the primary's position, then every replica's state, concurrently."""
        started = time.monotonic()
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancel that arrives as its
            # awaitable completes, and this loop then never stopped (a shutdown waited for ever).
            async with asyncio.timeout(self.timeout_s):
                lsn = int(await self.primary.raw.fetchval(PRIMARY_SQL))
            if self._samples and self._samples[-1][1] == lsn:  # idle primary: one sample, its latest time
                self._samples[-1] = (started, lsn)
            else:
                self._samples.append((started, lsn))
        except Exception as exc:  # the primary is down: staleness keeps growing, replicas age out
            logger.debug("primary position unavailable: %s", exc)
        horizon = started - self.max_lag_s - 2 * self.interval_s
        while len(self._samples) > 1 and self._samples[0][0] < horizon:
            self._samples.popleft()
        await asyncio.gather(*(self._check(replica) for replica in self.replicas))
        self._floors = {k: v for k, v in self._floors.items() if started - v[1] <= self.max_lag_s}

    async def _check(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                row = await self._replica_state(replica)
        except Exception as exc:
            if replica.up:
                logger.warning("read replica %s (%s) is down: %s", replica.index, replica.where, exc)
            replica.up, replica.detail = False, f"unreachable ({type(exc).__name__})"
            return
        if not row["recovering"]:
            replica.up, replica.detail = False, "not in recovery (promoted?): not a replica any more"
            return
        replica.replayed = int(row["replayed"] or 0)
        replica.caught_up_at = next(
            (t for t, lsn in reversed(self._samples) if lsn <= replica.replayed), None
        )
        if not replica.up:
            logger.info("read replica %s (%s) is up", replica.index, replica.where)
        replica.up, replica.detail = True, "streaming"

    async def _replica_state(self, replica: Replica) -> asyncpg.Record:
        async with replica.pool.raw.acquire() as conn:
            row = await conn.fetchrow(REPLICA_SQL)
        assert row is not None
        return row

    async def run(self) -> None:
        """Check every interval until cancelled (the Runtime's background task)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:  # a bug must not stop the checks: the replicas would freeze as they were
                logger.exception("read replica check failed")

    def status(self) -> list[ReplicaStatus]:
        now = time.monotonic()
        out = []
        for r in self.replicas:
            lag = r.staleness(now)
            healthy = r.usable(now, self.max_lag_s, 0)
            detail = r.detail
            if r.up and not healthy:
                detail = "lagging: " + (
                    "behind every recent sample" if lag is None else f"{lag:.1f} s behind"
                )
            out.append(
                ReplicaStatus(r.index, r.where, healthy, None if lag is None else round(lag, 3), detail)
            )
        return out

    def summary(self) -> tuple[bool, str]:
        """(all healthy, one sentence) for /health/ready and doctor: a replica down only degrades."""
        states = self.status()
        healthy = sum(s.healthy for s in states)
        if healthy == len(states):
            return True, f"{healthy} of {len(states)} healthy"
        down = "; ".join(f"replica {s.index} ({s.where}): {s.detail}" for s in states if not s.healthy)
        return False, f"degraded: {healthy} of {len(states)} healthy, reads fall back to the primary; {down}"

    async def close(self) -> None:
        async def close_one(replica: Replica) -> None:
            try:  # a replica that hangs must not hold the shutdown
                await asyncio.wait_for(replica.pool.close(), self.timeout_s)
            except Exception:
                replica.pool.raw.terminate()

        await asyncio.gather(*(close_one(r) for r in self.replicas))
