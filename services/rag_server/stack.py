"""`rag-server up`: the embedded database, migrations, a supervised worker and the API server."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import psutil

from rag_server.config import Settings
from rag_server.infra.embedded_postgres import (
    EmbeddedPostgres,
    ensure_embedded_postgres,
    restart_embedded_postgres,
    start_failure,
)
from rag_server.infra.lifetime import StopSignals
from rag_server.infra.migrations import migrate_before_loop

logger = logging.getLogger(__name__)


@dataclass
class RestartBackoff:
    """How long to wait before restarting a worker that exited: doubling from `initial_s` up to
    `max_s` while it keeps crashing, back to `initial_s` once a run lasted `reset_after_s` (a crash
    after a healthy hour is not a crash loop)."""

    initial_s: float = 1.0
    max_s: float = 30.0
    reset_after_s: float = 60.0
    _next_s: float = 0.0

    def __post_init__(self) -> None:
        self._next_s = self.initial_s

    def delay_after(self, ran_for_s: float) -> float:
        """The wait before the next restart of a worker that ran for `ran_for_s` seconds."""
        if ran_for_s >= self.reset_after_s:
            self._next_s = self.initial_s
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return delay


class WorkerSupervisor:
    """Keeps one `rag-server worker` process running; a crashed worker is restarted with backoff,
    so uploads are never left waiting on a dead process."""

    def __init__(self, max_backoff_s: float = 30.0) -> None:
        self.backoff = RestartBackoff(max_s=max_backoff_s)
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)
        self._spawning = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    @contextlib.contextmanager
    def waited_for(self) -> Iterator[set[int]]:
        """The worker's pid (none before the first start), its Popen waits for it; no worker starts
        until the block ends: one that died between its fork and its Popen's return was reaped as an
        orphan, and its Popen then read exit code 0."""
        with self._spawning:
            process = self.process
            yield set() if process is None else {process.pid}

    def _start_worker(self) -> subprocess.Popen[bytes] | None:
        """A new worker, or None once `stop` began (it reads `process` under the same lock)."""
        with self._spawning:
            if self._stopping.is_set():
                return None
            self.process = self._spawn()
            return self.process

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Own session: Ctrl-C in the terminal reaches only `up`, which then stops the worker
        # with SIGTERM (graceful) instead of both racing on SIGINT. The environment carries the
        # settings, RAG_LOG_FORMAT and RAG_LOG_LEVEL included (a .env file is read by both).
        # --parent: the worker stops when this process dies, even by SIGKILL, which runs no stop().
        command = [sys.executable, "-m", "rag_server", "worker", "--parent", str(os.getpid())]
        return subprocess.Popen(command, env=os.environ.copy(), start_new_session=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            process = self._start_worker()
            if process is None:
                return
            code = process.wait()
            if self._stopping.is_set():
                return
            delay = self.backoff.delay_after(time.monotonic() - started)
            logger.error("worker exited with code %s; restarting in %.0fs", code, delay)
            if self._stopping.wait(delay):
                return

    def stop(self, grace_s: float = 30.0) -> None:
        # Under the spawn's lock: a worker starting now is the one stopped (read before its Popen returned,
        # `process` was the previous one, and the new worker ran on unsignalled), and none starts after.
        with self._spawning:
            self._stopping.set()
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def become_subreaper() -> None:
    """Orphans of the stack (the postmaster, once pg_ctl exits) become this process's children, so a killed
    postmaster is reaped here at once: under a PID 1 that reaps late or never (some containers), it stayed
    a zombie whose postmaster.pid looked alive, and PostgreSQL refused to start again over it."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_child_subreaper = 36
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def reap_orphans(spared: Callable[[], AbstractContextManager[Collection[int]]]) -> None:
    """Collect the children that ended here without being ours to wait for (see `become_subreaper`): a
    killed postmaster and its backends, a killed worker's parse child. `spared`: the pids a Popen of this
    process waits for itself (the worker), whose exit status it needs, none started meanwhile. Called from
    the thread that runs this process's only other subprocesses (pg_ctl, one after the other), so none of
    theirs is taken."""
    with spared() as keep:
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error, ChildProcessError):
                if child.pid not in keep and child.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(child.pid, os.WNOHANG)


# The longest wait between two starts of an embedded PostgreSQL that keeps failing to start.
MAX_RESTART_WAIT_S = 30.0


class DatabaseWatch:
    """Starts the embedded PostgreSQL again when it dies under `up` (the OOM killer, a kill -9): the stack
    otherwise answered 503 for ever with no line saying why. `current`: the server to stop at the end
    (one started again here is this `up`'s, also when the first was only attached to)."""

    def __init__(
        self,
        embedded: EmbeddedPostgres,
        listen: str,
        spared: Callable[[], AbstractContextManager[Collection[int]]],
        interval_s: float = 2.0,
    ) -> None:
        self.current = embedded
        self.listen = listen
        self.spared = spared  # reap_orphans'
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="database-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        failed = 0  # starts failed in a row: PostgreSQL cannot start (a full disk, a bad setting)
        retry_at = 0.0
        while not self._stopping.wait(self.interval_s):
            reap_orphans(self.spared)
            if self.current.running() or time.monotonic() < retry_at:
                continue
            pgdata = self.current.pgdata
            if not failed:
                logger.error("embedded PostgreSQL in %s is gone (killed?): starting it again", pgdata)
            try:
                self.current = restart_embedded_postgres(pgdata, self.listen)
            except Exception as exc:  # logged; tried again ever less often (each try logs, on that disk)
                failed += 1
                wait_s = min(self.interval_s * 2**failed, MAX_RESTART_WAIT_S)
                retry_at = time.monotonic() + wait_s - self.interval_s
                cause = start_failure(pgdata) if isinstance(exc, subprocess.CalledProcessError) else None
                if cause is None:
                    logger.exception("embedded PostgreSQL in %s did not start again", pgdata)
                else:  # its own sentence, not pg_ctl's traceback every round (a full disk: for hours)
                    logger.error(
                        "embedded PostgreSQL in %s did not start again: %s (its log: %s); "
                        "trying again in %g s",
                        pgdata,
                        cause,
                        pgdata / "log",
                        wait_s,
                    )
                continue
            if failed:
                logger.info("embedded PostgreSQL in %s started again after %d failed starts", pgdata, failed)
            failed, retry_at = 0, 0.0

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


def run_stack(settings: Settings, host: str, port: int, signals: StopSignals) -> None:
    """Until SIGTERM or Ctrl-C (`signals`, caught since the process started): a stop during the start-up
    lets the step under way finish (the database's start, migrations), then undoes what was started."""
    from rag_server.access.exposure import refuse_open_exposure
    from rag_server.api.server import listen, serve_api

    sock = listen(host, port)  # a port in use: nothing else starts
    supervisor = WorkerSupervisor()
    watch: DatabaseWatch | None = None
    try:
        if settings.database_url:
            url = settings.database_url
        else:
            become_subreaper()  # before the postmaster starts: it is an orphan once pg_ctl exits
            embedded = ensure_embedded_postgres(settings.embedded_pgdata, settings.embedded_listen)
            url = embedded.uri
            logger.info(
                "embedded PostgreSQL 18 in %s (%s)",
                embedded.pgdata,
                "started" if embedded.started_here else "already running: left running at the end",
            )
            watch = DatabaseWatch(embedded, settings.embedded_listen, spared=supervisor.waited_for)
            watch.start()
        signals.check()
        # Migrate once here so the worker and the server start on a ready schema.
        migrate_before_loop(url, settings)
        settings = settings.model_copy(update={"host": host, "port": port})
        refuse_open_exposure(settings)  # before the worker starts: no key and not loopback, no stack
        signals.check()
        supervisor.start()
        try:
            logger.info("rag-server on http://%s:%s with one worker; Ctrl-C stops all", host, port)
            serve_api(settings, host, port, signals, exposure_checked=True, sock=sock)
        finally:
            supervisor.stop()
    finally:
        sock.close()
        if watch is not None:
            watch.stop()
            if watch.current.started_here:
                watch.current.stop()
                logger.info("embedded PostgreSQL stopped")
