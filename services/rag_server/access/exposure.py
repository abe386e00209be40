"""Who may reach the API without a key: nobody once a key exists; before that, only this machine.

Open mode exists so that `just up` works at once for one person on their own machine. Bound to any
other address without a key, the server refuses to start (`serve`, `up`). Behind a reverse proxy on the
same machine the server cannot tell: create a key there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import sys
from typing import Literal

from rag_server.access.keys import HOW_TO_CREATE, ensure_bootstrap_key, keys_exist, list_keys
from rag_server.config import Settings
from rag_server.infra.database import Executor

logger = logging.getLogger(__name__)

AccessMode = Literal["open", "api_key", "locked"]


class ExposureRefusedError(Exception):
    """Bound to a non-loopback address with no API key: the server does not start."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _host_of(authority: str) -> str:
    """The host of a Host header's value or an origin's authority: `[::1]:8000` -> `[::1]`."""
    if authority.startswith("["):
        return authority.partition("]")[0] + "]"
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


def open_mode_refusal(host: str | None, origin: str | None) -> str | None:
    """Why a request may not use the open API (no key exists), else None.

    Open means "anyone on this machine", but a web page from anywhere runs on this machine too: a page of
    another site could send forms here (a cross-site POST: its Origin names that site), and one whose
    name it points at 127.0.0.1 (DNS rebinding: its Host names that site) could read every answer. Only
    requests addressed to a loopback name, from no page or a page of one, use the open API: the web app's
    own requests, curl and the clients on this machine. /mcp has the MCP SDK's check of the same."""
    if host is None or not is_loopback(_host_of(host.strip().lower())):
        return (
            f"no API key exists, so the API answers only requests addressed to this machine's loopback "
            f"address (127.0.0.1, localhost or [::1]), not to {host!r}: reached by another name (a "
            f"reverse proxy, a host alias), {HOW_TO_CREATE}"
        )
    if origin is not None:
        scheme, _, authority = origin.strip().lower().partition("://")
        if scheme not in ("http", "https") or not is_loopback(_host_of(authority)):
            return (
                f"no API key exists, so the API answers no web page of another site (Origin {origin!r}): "
                f"only its own web app and the clients on this machine; to allow others, {HOW_TO_CREATE}"
            )
    return None


async def access_mode(conn: Executor, settings: Settings) -> AccessMode:
    """open: no key, loopback; api_key: keys required; locked: no key, not loopback (nothing answers)."""
    if await keys_exist(conn):
        return "api_key"
    return "open" if is_loopback(settings.host) else "locked"


async def prepare_access(conn: Executor, settings: Settings, *, announce: bool = True) -> AccessMode:
    """At start-up: install the bootstrap admin key if one is configured, then refuse to serve an open
    API beyond this machine. `conn` needs an admin scope (the bootstrap key is written). `announce`:
    warn of an API open to this machine, or closed to everyone; False for a check before the app's own
    start-up, which says it (once)."""
    key = settings.bootstrap_key()
    if key and await ensure_bootstrap_key(conn, key):
        logger.info("installed the bootstrap admin key (RAG_BOOTSTRAP_ADMIN_KEY or its _FILE)")
    mode = await access_mode(conn, settings)
    if mode == "locked":
        raise ExposureRefusedError(
            f"refusing to serve on {settings.host}: no API key exists, so anyone who can reach this "
            f"address could read and change everything. To go on: {HOW_TO_CREATE} (then send it as "
            "`Authorization: Bearer <key>`), set RAG_BOOTSTRAP_ADMIN_KEY, or listen on 127.0.0.1."
        )
    if not announce:
        return mode
    if mode == "api_key" and (await list_keys(conn)).total == 0:
        # Every key revoked: after an upgrade past 0017 from a version where that reopened the API, or
        # as `keys revoke` said at the time. Nothing else in the log would say why everything is a 401.
        logger.warning(
            "every API key is revoked: the API answers 401 to everything but /health (keys were made "
            "once, so it never reopens): %s",
            HOW_TO_CREATE,
        )
    if mode == "open":
        logger.warning(
            "the API is OPEN: no API key exists; it answers anyone on this machine (%s). To require "
            "keys, %s.",
            settings.host,
            HOW_TO_CREATE,
        )
    return mode


def refuse_open_exposure(settings: Settings) -> None:
    """Before `serve`/`up` listen beyond loopback: exit with a message when no API key exists (the
    app's start-up checks again, this only spares the traceback and starting the worker). An unreadable
    RAG_BOOTSTRAP_ADMIN_KEY_FILE is refused here too (a ConfigError: the CLI's one line). The database
    is migrated already (both callers do it first)."""
    settings.bootstrap_key()
    if is_loopback(settings.host):
        return
    from rag_server.infra.runtime import open_runtime

    async def check() -> None:
        async with open_runtime(settings, migrate=False) as runtime:
            await prepare_access(runtime.pool, settings, announce=False)

    try:
        asyncio.run(check())
    except ExposureRefusedError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
