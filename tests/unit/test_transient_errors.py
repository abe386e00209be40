"""Which errors mean "the database is unavailable, retry" (API 503, worker re-queue) and which are bugs."""

from __future__ import annotations

import errno

import asyncpg
import asyncpg.exceptions._base as asyncpg_base
import pytest

from rag_server.infra.database import is_transient_db_error

TRANSIENT = [
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.TooManyConnectionsError("too many clients"),
    asyncpg.DeadlockDetectedError("deadlock detected"),
    asyncpg.SerializationError("could not serialize access"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.ObjectInUseError("database is being accessed by other users"),  # 55006
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("pool is closing"),
    # A COMMIT sent while asyncpg still read the FATAL of a terminated backend (seen in test_read_replicas).
    asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    FileNotFoundError(errno.ENOENT, "No such file or directory"),  # the unix socket of a stopped server
    OSError(errno.EHOSTUNREACH, "No route to host"),
    TimeoutError(),
]

NOT_TRANSIENT = [
    asyncpg.UniqueViolationError("duplicate key"),
    asyncpg.UndefinedTableError("relation does not exist"),
    asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00"),
    asyncpg_base.DataError("invalid input for query argument $1"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    asyncpg.exceptions.ClientConfigurationError("bad option"),
    asyncpg.InternalClientError("cannot switch to state 15; another operation (16) is in progress"),
    asyncpg.InternalClientError('cannot switch to state 15; protocol is in the "failed" state'),
    OSError(errno.ENOSPC, "No space left on device"),
    OSError("a plain OSError"),
    ValueError("a bug"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=repr)
def test_outages_are_transient(exc: BaseException) -> None:
    assert is_transient_db_error(exc)


@pytest.mark.parametrize("exc", NOT_TRANSIENT, ids=repr)
def test_bugs_and_bad_queries_are_not(exc: BaseException) -> None:
    assert not is_transient_db_error(exc)
