"""`rag-server ingest PATH...`: bulk upload through the running API, progress from the batch status.

Goes through the same HTTP API as the chat UI (upload, then poll /tasks/{batch}/status), with the one
API client (rag_server.client), so a bulk load exercises exactly the path users take and the worker(s)
do the processing.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rag_server.client import Client, ClientError
from rag_server.collections.models import DEFAULT_COLLECTION
from rag_server.ingestion.documents import sha256_hex
from rag_server.ingestion.models import BatchStatus, NamedDocument
from rag_server.ingestion.parsing import file_type_for, sanitize_filename

# One request carries at most this many files / bytes; bigger loads become several batches.
GROUP_FILES = 100
GROUP_BYTES = 64 * 1024 * 1024
FINISHED = ("completed", "failed", "duplicate")
_COUNTED = ("processing", "completed")  # the tasks whose chunks the bar counts (of a document still there)
NAMES_SHOWN = 20  # lines naming files added beside a document of their name

LIMITS = ("max_files_per_upload", "max_file_bytes", "max_request_bytes")


@dataclass(frozen=True)
class UploadLimits:
    """What the server's POST /upload accepts (GET /status `upload`)."""

    max_files_per_upload: int
    max_file_bytes: int
    max_request_bytes: int


@dataclass(frozen=True)
class LocalFile:
    """A file to upload: where it is, and the name of its document: its path inside the folder given
    ("setup/README.md", so one file name in two sub-folders makes two documents), or its own name for a
    file given by itself."""

    path: Path
    name: str


def collect_files(paths: Iterable[str | Path]) -> tuple[list[LocalFile], list[Path], int]:
    """(supported files, skipped files (unsupported, missing or unreadable), hidden files left out): files
    as given, folders recursively, sorted, no repeats. Inside a folder, what is hidden (a name starting
    with ".": .git, .DS_Store) is left out, as the web app does: never what a person means by "this
    folder"."""
    found: list[LocalFile] = []
    skipped: list[Path] = []
    hidden = 0
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        candidates = [path]
        inside_folder = path.is_dir()
        if inside_folder:
            inside, unlisted = _walk(path)
            skipped += [p for p in unlisted if not _hidden(p, path)]
            candidates = [p for p in inside if not _hidden(p, path)]
            hidden += len(inside) - len(candidates)
        for p in candidates:
            resolved = p.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            if not p.is_file() or file_type_for(p.name) is None or not _readable(p):
                skipped.append(p)
            else:
                # The name the server will give it: repeated names are found before anything is sent.
                local = p.relative_to(path) if inside_folder else Path(p.name)  # bytes not UTF-8: U+FFFD
                name = sanitize_filename(os.fsencode(local).decode("utf-8", "replace"))
                found.append(LocalFile(p, name))
    return found, skipped, hidden


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """(the files under `folder`, sorted, a dangling link among them to be reported as missing; the
    folders that could not be listed). pathlib's rglob passes over a folder it may not list without a
    word, so its files were left out unsaid (and "nothing to ingest" for the folder given itself)."""
    files: list[Path] = []
    unlisted: list[Path] = []

    def unlistable(error: OSError) -> None:
        unlisted.append(Path(error.filename))

    for root, _, names in os.walk(folder, onerror=unlistable):
        files += (Path(root, n) for n in names)
    return sorted(p for p in files if p.is_file() or (p.is_symlink() and not p.exists())), sorted(unlisted)


def _readable(path: Path) -> bool:
    """Whether this process may open the file (one it may not, mode 000, ended the whole run with a
    traceback when its digest was read, before anything was sent)."""
    try:
        with path.open("rb"):
            return True
    except OSError:
        return False


def ingest_paths(
    paths: Sequence[str],
    *,
    base_url: str,
    wait: bool = True,
    skip_duplicates: bool = True,
    max_file_bytes: int | None = None,
    timeout_s: float = 120.0,
    collection: str = "default",
    api_key: str | None = None,
    metadata: str | None = None,
    replace: bool = False,
    name: str | None = None,
) -> int:
    """Upload every supported file under `paths` into `collection` and (by default) wait until all are
    processed. `metadata`: a JSON object every file gets; `replace`: a file named like a stored document
    replaces its file; `name`: the document's name for the one file given (the file's own name
    otherwise). Exit code: 0 when nothing failed, 1 otherwise, 2 for a bad argument (metadata that is not
    a JSON object, a name for more than one file); a failed request raises ClientError (the server checks
    the object's limits)."""
    # None (no --metadata): a replaced document keeps its metadata; '{}' given: it is cleared.
    common: dict[str, Any] | None = None
    if metadata is not None and (common := _metadata_object(metadata)) is None:
        return 2
    files, skipped, hidden = collect_files(paths)
    if hidden:
        print(f"left out {hidden} hidden file(s) (names starting with '.')", file=sys.stderr)
    for p in skipped:
        print(f"skipped (unsupported, missing or unreadable): {p}", file=sys.stderr)
    if not files:
        print("nothing to ingest", file=sys.stderr)
        return 1 if skipped else 0
    if name is not None:
        if (named := _named(files, skipped, paths, name)) is None:
            return 2
        files = [named]
    repeated = sorted(shared for shared, n in Counter(p.name for p in files).items() if n > 1)
    if replace and repeated:
        # Before any upload: the server refuses a name twice in one replace, and the files may be split
        # into several uploads, so a later one would fail after the first ones went in.
        print(
            f"error: with --replace each file's name says which document it replaces, and {repeated[0]!r}"
            f"{' (and others)' if len(repeated) > 1 else ''} is the name of more than one file given (a name"
            " is the path inside the folder given); give their common folder, or ingest them one at a time",
            file=sys.stderr,
        )
        return 2
    if repeated:
        print(
            f"{repeated[0]!r}{f' (and {len(repeated) - 1} other name(s))' if len(repeated) > 1 else ''}"
            " is the name of more than one file given: each becomes a document of that name (a name is the"
            " path inside the folder given: give their common folder to tell them apart)",
            file=sys.stderr,
        )

    with Client(base_url, api_key=api_key, timeout=timeout_s) as client:
        # The server's own limits (GET /status), not this machine's settings: a file over them was a
        # 413 that stopped the whole run before anything was uploaded.
        limits = UploadLimits(**{k: int(v) for k, v in client.status()["upload"].items() if k in LIMITS})
        most = limits.max_file_bytes if max_file_bytes is None else min(max_file_bytes, limits.max_file_bytes)
        sizes = {f: f.path.stat().st_size for f in files}
        for f in files:
            if not sizes[f]:  # the server refuses it, and with it the rest of its upload
                print(f"skipped (empty): {f.path}", file=sys.stderr)
            elif sizes[f] > most:
                print(f"skipped (over the limit of {most:,} bytes): {f.path}", file=sys.stderr)
        files = [f for f in files if 0 < sizes[f] <= most]
        if not files:
            print("nothing to ingest", file=sys.stderr)
            return 1
        fixes: list[LocalFile] = []
        if skip_duplicates:
            files, fixes = _checked(client, files, collection, replace, repeated)
            if not files and not fixes:
                print("every file is already stored", file=sys.stderr)
                return 0
        batch_ids = [_upload(client, group, collection, common, replace) for group in _groups(files, limits)]
        batch_ids += [_upload(client, group, collection, common, True) for group in _groups(fixes, limits)]
        files += fixes
        print(f"uploaded {len(files)} files in {len(batch_ids)} batch(es)", file=sys.stderr)
        if not wait:
            for batch_id in batch_ids:
                print(batch_id)
            return 0
        statuses = _wait(client, batch_ids, len(files), collection)
    failed = [t for s in statuses for t in s.tasks if t.status == "failed"]
    counts = sum((Counter[str](s.counts) for s in statuses), Counter[str]())
    print(", ".join(f"{n} {status}" for status, n in counts.items() if n), file=sys.stderr)
    for t in failed:
        print(f"failed: {t.filename}: {t.error}", file=sys.stderr)
    return 1 if failed else 0


def _checked(
    client: Client, files: list[LocalFile], collection: str, replace: bool, repeated: list[str]
) -> tuple[list[LocalFile], list[LocalFile]]:
    """(the files to upload as asked, the fixes of failed documents), without those the collection holds
    already. With `replace`, a file whose bytes are another document's is kept when a document has its
    name: it names the document it replaces, and the server's refusal says why (when none has, the
    upload would only be a duplicate: an unchanged file of a folder ingested before names had folders).
    Without it, a file of a failed document's name (and no other) is that document's fix, uploaded as
    its new version ("fix the file, ingest again" left the failed one beside it); one named like a
    document with other bytes is added beside it, and said so."""
    digests = [sha256_hex(p.path.read_bytes()) for p in files]
    checked = client.check_duplicates([(p.name, d) for p, d in zip(files, digests, strict=True)], collection)
    results = dict(zip(files, checked.results, strict=True))
    kept = [
        p
        for p, r in results.items()
        if not r.duplicate
        or (replace and r.existing_filename is not None and r.existing_filename != p.name and r.same_name)
    ]
    if len(kept) < len(files):
        print(f"{len(files) - len(kept)} file(s) already stored, not uploaded again", file=sys.stderr)
    _say_bare_names([(p, results[p].bare_name) for p in kept if results[p].bare_name], collection)
    if replace:
        return kept, []
    fixes = [
        p for p in kept if p.name not in repeated and [d.status for d in results[p].same_name] == ["failed"]
    ]
    beside = [p for p in kept if results[p].same_name and p not in fixes]
    for p in beside[:NAMES_SHOWN]:
        stored = len(results[p].same_name)
        print(
            f"{p.path}: {collection} already has a document named {p.name!r} with other content: this one is"
            " added beside it (--replace makes it a new version of that one instead)"
            if stored == 1
            # --replace would be a 409: it cannot tell which one is meant.
            else f"{p.path}: {collection} already has {stored} documents named {p.name!r}: this one is added"
            " beside them (to make it a new version of one, delete the others first:"
            f" `{_command('documents', 'list', '--name', p.name, collection=collection)}`,"
            f" `{_command('documents', 'delete', 'ID', collection=collection)}`)",
            file=sys.stderr,
        )
    if len(beside) > NAMES_SHOWN:
        print(
            f"... and {len(beside) - NAMES_SHOWN} more added beside a document of their name", file=sys.stderr
        )
    if fixes:
        print(f"{len(fixes)} file(s) replace the failed document of their name", file=sys.stderr)
    return [p for p in kept if p not in fixes], fixes


def _named(files: list[LocalFile], skipped: list[Path], paths: Sequence[str], name: str) -> LocalFile | None:
    """The one file given (`files` holds at least one), under `name` as the server will clean it; None
    (after saying why) when more than one file, or a folder, is given, or the name is not of a supported
    type."""
    if len(paths) != 1 or len(files) + len(skipped) != 1 or Path(paths[0]).is_dir():
        print("error: --name names one document: give exactly one file, not a folder", file=sys.stderr)
        return None
    cleaned = sanitize_filename(name)
    if file_type_for(cleaned) is None:
        print(f"error: --name {name!r}: its extension is not of a supported type", file=sys.stderr)
        return None
    return LocalFile(files[0].path, cleaned)


def _say_bare_names(files: list[tuple[LocalFile, list[NamedDocument]]], collection: str) -> None:
    """Files of a folder whose name only documents stored before names had folders (0013) share: each
    is added beside them, also with --replace (which matches whole names), and says how else."""
    for p, stored in files[:NAMES_SHOWN]:
        bare = p.name.rpartition("/")[2]
        if len(stored) == 1:
            replacing = _command("ingest", "--replace", "--name", bare, str(p.path), collection=collection)
            deleting = _command("documents", "delete", str(stored[0].id), collection=collection)
            instead = (
                f"make it that document's new version instead: `{replacing}`, or delete that one once"
                f" this is in: `{deleting}`"
            )
        else:
            listing = _command("documents", "list", "--name", bare, collection=collection)
            instead = f"they are among those `{listing}` lists"
        print(
            f"{p.path}: {collection} has {len(stored)} document(s) named {bare!r}, stored before documents"
            f" were named by their path: this one is added beside as {p.name!r} ({instead})",
            file=sys.stderr,
        )
    if len(files) > NAMES_SHOWN:
        print(f"... and {len(files) - NAMES_SHOWN} more named so before", file=sys.stderr)


def _command(*args: str, collection: str) -> str:
    """A `rag-server` command line to print, for the collection being ingested into, quoted for a shell."""
    where = () if collection == DEFAULT_COLLECTION else ("--collection", collection)
    return shlex.join(("rag-server", *args, *where))


def _groups(files: list[LocalFile], limits: UploadLimits) -> Iterable[list[LocalFile]]:
    """Uploads of at most GROUP_FILES files and GROUP_BYTES, within the server's limits."""
    most_files = min(GROUP_FILES, limits.max_files_per_upload)
    # The request's multipart framing takes a little beside the files themselves.
    most_bytes = min(GROUP_BYTES, limits.max_request_bytes - 64 * 1024)
    group: list[LocalFile] = []
    size = 0
    for p in files:
        n = p.path.stat().st_size
        if group and (len(group) >= most_files or size + n > most_bytes):
            yield group
            group, size = [], 0
        group.append(p)
        size += n
    if group:
        yield group


def _metadata_object(raw: str) -> dict[str, Any] | None:
    """--metadata parsed; None (after saying why) when it is not a JSON object."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        print(f"error: --metadata is not valid JSON: {exc}", file=sys.stderr)
        return None
    if not isinstance(value, dict):
        print('error: --metadata must be a JSON object, like \'{"team": "x"}\'', file=sys.stderr)
        return None
    return value


def _upload(
    client: Client, group: list[LocalFile], collection: str, metadata: dict[str, Any] | None, replace: bool
) -> str:
    named = [(f.name, f.path) for f in group]
    answer = client.upload(named, collection, metadata=metadata, replace=replace)
    for warning in answer.warnings:  # names as the server cleans them: two local names may become one
        print(f"warning: {warning}", file=sys.stderr)
    return str(answer.batch_id)


def chunk_progress(statuses: Sequence[BatchStatus]) -> str:
    """`embedded/total` chunks of the files being processed (a big file's total is known once it is
    read; a deleted document's are gone): the bar counts files, and one 50 MB file is minutes of `0/1`."""
    tasks = [t for s in statuses for t in s.tasks if t.document_id and t.status in _COUNTED]
    return f"{sum(t.completed_chunks for t in tasks):,}/{sum(t.total_chunks for t in tasks):,}"


def progress_postfix(statuses: Sequence[BatchStatus]) -> dict[str, str]:
    """The bar's words after its count of files: the chunks (chunk_progress) once a file is read, and the
    documents deleted while it waited (their tasks name none), not `chunks=0/0` as if they held no text."""
    tasks = [t for s in statuses for t in s.tasks]
    postfix: dict[str, str] = {}
    if any(t.document_id and t.status in _COUNTED for t in tasks):
        postfix["chunks"] = chunk_progress(statuses)
    if deleted := sum(1 for t in tasks if t.document_id is None):
        postfix["deleted"] = f"{deleted:,}"
    return postfix


def _wait(
    client: Client, batch_ids: list[str], total: int, collection: str, poll_s: float = 0.5
) -> list[BatchStatus]:
    """Poll every batch until all tasks are finished; the bar counts finished files."""
    with tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True) as bar:
        while True:
            statuses = [_batch_status(client, batch_id, collection) for batch_id in batch_ids]
            finished = sum(1 for s in statuses for t in s.tasks if t.status in FINISHED)
            bar.update(finished - bar.n)
            bar.set_postfix(progress_postfix(statuses), refresh=False)
            if all(s.done for s in statuses):
                return statuses
            time.sleep(poll_s)


def _batch_status(client: Client, batch_id: str, collection: str) -> BatchStatus:
    """The batch's status; a batch gone with its collection (deleted meanwhile, with its documents and
    tasks) says so, where the server can only say the batch is not there."""
    try:
        return client.batch_status(batch_id)
    except ClientError as exc:
        if exc.status != 404:
            raise
        try:
            client.documents(collection, limit=1)
        except ClientError as gone:
            if gone.status == 404:
                raise ClientError(
                    f"the collection {collection!r} was deleted while its files were processed: its"
                    " documents, tasks and uploads went with it",
                    404,
                ) from None
        raise
