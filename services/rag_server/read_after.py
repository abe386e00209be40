"""The read-your-writes token (`X-Rag-Read-After`): a primary WAL position in pg_lsn text form.

Shared by the server (infra/replicas.py answers it after a write and honours it on reads) and the API
client (client.py sends back the newest one it saw), so neither keeps its own copy of the format.
"""

from __future__ import annotations

# A client that writes through one server process and reads through another sends back the position
# a write answered with: that read then goes to the primary or a replica that has replayed it.
READ_AFTER_HEADER = "X-Rag-Read-After"


def lsn_text(lsn: int) -> str:
    """PostgreSQL's pg_lsn text form (`16/B374D848`)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str | None) -> int:
    """A pg_lsn text as a number; 0 (no constraint) for anything else: a bad header never fails a read."""
    high, sep, low = (text or "").strip().partition("/")
    try:
        value = (int(high, 16) << 32) | int(low, 16) if sep and len(high) <= 8 and len(low) <= 8 else 0
    except ValueError:
        return 0
    return value if value >= 0 else 0
