"""Serving the app with uvicorn: `rag-server serve` and `rag-server up` both start it here.

Shutdown is bounded. On SIGTERM/Ctrl-C uvicorn stops accepting connections and waits for in-flight
requests, but a streamed answer lasts as long as the LLM keeps sending (each token gap may take up to
`llm_timeout_s`), so an unbounded wait could hold a `docker stop` until its SIGKILL. After
`server_shutdown_grace_s` uvicorn cancels what is still running: a cancelled answer writes nothing (like
a client disconnect), a completed answer's write is shielded and drained by the app's lifespan before
the pool closes, and every other write is one transaction that rolls back.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys

from rag_server.config import Settings
from rag_server.infra.lifetime import StopSignals

logger = logging.getLogger(__name__)


def listen(host: str, port: int) -> socket.socket:
    """The API's socket, bound before anything else starts (for `up`: the database and the worker). A
    port in use is one `error:` line, as the CLI's every refusal, and exit 2, not a whole stack started and
    stopped around a log line."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        if exc.errno == errno.EADDRINUSE:
            reason += " (another rag-server?): stop it, or choose another port with --port"
        print(f"error: cannot listen on {host}:{port}: {reason}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return sock


def serve_api(
    settings: Settings,
    host: str,
    port: int,
    signals: StopSignals,
    *,
    exposure_checked: bool = False,
    sock: socket.socket | None = None,
) -> None:
    """Run the API until SIGTERM or Ctrl-C (`signals`, caught since the process started); returns after a
    clean shutdown, or raises StoppedBeforeReady when stopped before uvicorn started (migrations).
    Bound beyond loopback with no API key it does not start (SystemExit(2), with how to create one).
    `sock`: the socket `listen` bound (else it binds here); a start-up failure exits 3, as uvicorn's."""
    import uvicorn

    from rag_server.access.exposure import refuse_open_exposure
    from rag_server.api.app import create_app
    from rag_server.api.request_head import BoundedHttpToolsProtocol
    from rag_server.infra.database import resolve_database_url
    from rag_server.infra.migrations import migrate_before_loop

    signals.check()
    announce = sock is None  # `up` says where it listens itself
    if sock is None:
        sock = listen(host, port)
    settings = settings.model_copy(update={"host": host, "port": port})  # the app knows where it listens
    if not exposure_checked:  # `up` migrated and checked before it started its worker
        settings.bootstrap_key()  # a bad one is one line before the database starts
        # Migrated here, not in the app's start-up: a database it cannot use (a newer version migrated
        # it; another model's) is then the CLI's one line, not a traceback out of uvicorn's.
        migrate_before_loop(resolve_database_url(settings), settings)
        refuse_open_exposure(settings)
        signals.check()  # a stop during migrations: they finished, the app never starts
    config = uvicorn.Config(
        create_app(settings, migrate=False),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        # Our handler formats uvicorn's lines too (infra/logs.py); the access line is ours, once per
        # request, with the route template instead of a path and query string that can hold query text.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.server_shutdown_grace_s,
        # httptools with a bound on each request's line and headers (api/request_head.py): it has none.
        http=BoundedHttpToolsProtocol,
        # No route is a websocket: an upgrade stays an HTTP request, under that protocol's clocks.
        ws="none",
    )
    server = uvicorn.Server(config)
    if announce:
        logger.info("rag-server on http://%s:%s", host, port)

    # While uvicorn runs its own handlers catch the signals (stopping it gracefully, then raising the
    # signal again: `signals` records it, where the default SIGTERM killed the process, exit -15, before
    # `up` stopped its worker and database). A signal just before they are installed stops it too.
    def stop_server() -> None:
        server.should_exit = True

    with sock, signals.calling(stop_server):
        server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(3)
