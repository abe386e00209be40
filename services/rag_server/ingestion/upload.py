"""Upload validation: every file is checked (count, type, size, not empty) before anything is stored.

Takes Starlette's `UploadFile` parts (what a multipart form yields) and raises the domain errors the
API maps to 413 / 415 / 422; no HTTP types beyond that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from rag_server.collections.models import DEFAULT_COLLECTION
from rag_server.config import Settings
from rag_server.errors import InvalidInputError, TooLargeError, UnsupportedTypeError
from rag_server.ingestion.documents import IncomingFile
from rag_server.ingestion.metadata import check_metadata, merge_metadata, parse_metadata_json
from rag_server.ingestion.parsing import SUPPORTED_EXTENSIONS, file_type_for, sanitize_filename
from rag_server.text import clean_text

READ_CHUNK = 1024 * 1024


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _sizes(size: int, limit: int) -> tuple[str, str]:
    """A size over a limit, both in MB, or in bytes when MB would show the same number for both (a
    file one byte over 50 MB was "50.0 MB, over the limit of 50.0 MB")."""
    if _mb(size) != _mb(limit):
        return _mb(size), _mb(limit)
    return f"{size:,} bytes", f"{limit:,} bytes"


def check_declared_size(content_length: str | None, settings: Settings) -> None:
    """Refuse a request whose Content-Length is over the limit, before reading a byte of its body (one
    sent without a Content-Length: api/body_limit.py, as it streams)."""
    limit = settings.max_upload_request_bytes
    if content_length and content_length.isdigit() and int(content_length) > limit:
        raise TooLargeError(upload_over_limit(limit, int(content_length)))


def upload_over_limit(limit: int, size: int | None = None) -> str:
    """Why an upload request is refused for its size (`size` when it is known)."""
    if size is None:
        return f"The upload is over the limit of {_mb(limit)} per request; send the files in several uploads."
    shown, most = _sizes(size, limit)
    return f"The upload is {shown}, over the limit of {most} per request; send the files in several uploads."


UPLOAD_FIELDS = ("files", "collection", "metadata", "file_metadata", "replace")
REPLACEMENT_FIELDS = ("file", "metadata")


async def _form(
    request: Request, fields: tuple[str, ...], max_files: int, max_fields: int, too_many_files: Exception
) -> FormData:
    """The multipart form (file parts beyond 1 MB spooled to disk), holding no field but `fields` (a
    misspelt `colection` was ignored, and the files went into `default`). Starlette stops parsing at the
    file part after `max_files` with a 400 naming its own limit (one over ours, or 2 for a PUT that
    takes one): that is `too_many_files` instead."""
    try:
        form = await request.form(max_files=max_files, max_fields=max_fields)
    except HTTPException as exc:
        if exc.status_code == 400 and str(exc.detail).startswith("Too many files."):
            raise too_many_files from None
        if _header_too_long(exc):
            raise HTTPException(400, _HEADER_TOO_LONG) from None
        raise
    unknown = sorted(set(form.keys()) - set(fields))
    if unknown:
        await form.close()
        named = ", ".join(repr(name[:100]) for name in unknown[:5])
        plural = "s" if len(unknown) > 1 else ""
        raise InvalidInputError(f"Unknown form field{plural} {named}: the fields are {', '.join(fields)}.")
    return form


# python-multipart's limit on one header line of a part (its default, which Starlette keeps): a file name
# of over ~4,000 characters. Longer names than 255 are shortened when stored (parsing.sanitize_filename).
_HEADER_TOO_LONG = (
    "A part's header line is over 4 KiB (a file name of thousands of characters?): the multipart parser"
    " refuses it. Rename the file; names over 255 characters are shortened when stored anyway."
)


def _header_too_long(exc: BaseException) -> bool:
    """Starlette's bare "Invalid multipart data." for python-multipart's header limit: its cause is on the
    exception chain (Starlette raises the 400 while handling its own parse error)."""
    seen: BaseException | None = exc
    while seen is not None:
        if "Maximum header size exceeded" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def read_upload_form(request: Request, settings: Settings) -> FormData:
    """POST /upload's form: more than RAG_MAX_FILES_PER_UPLOAD files is a 413 saying the limit."""
    most = settings.max_files_per_upload
    too_many = TooLargeError(f"Too many files in one upload: over the limit of {most}; send them in several.")
    return await _form(request, UPLOAD_FIELDS, most, most + 10, too_many)


async def read_replacement_form(request: Request) -> FormData:
    """PUT /documents/{id}/file's form: one file (a second one is seen, and refused by read_replacement)."""
    too_many = InvalidInputError("Send exactly one file, in the multipart field 'file'.")
    return await _form(request, REPLACEMENT_FIELDS, 2, 5, too_many)


def spooled_bytes(parts: Sequence[UploadFile | str]) -> int:
    """The bytes of a form's files (spooled to disk by the form's parser): what reading them will hold."""
    return sum(p.size or 0 for p in parts if isinstance(p, UploadFile))


async def read_upload(parts: Sequence[UploadFile | str], settings: Settings) -> list[IncomingFile]:
    """Validate every part first (count, names, types, declared sizes), then read each with a limit.
    Every file over the size limit and every empty one is named in the refusal, not just the first (a
    caller fixing them one upload at a time); sizes win: any file too large is a 413 that also names
    the empty ones, only empty ones a 422. Nothing is stored either way."""
    files = [p for p in parts if isinstance(p, UploadFile)]
    names = _check_parts(files, settings)
    limit = settings.max_upload_bytes
    too_large: list[tuple[str, int | None]] = []
    empty: list[str] = []
    incoming: list[IncomingFile] = []
    for name, part in zip(names, files, strict=True):
        content = await _read_limited(part, limit)
        if content is None:
            too_large.append((name, None))
        elif not content:  # before anything is stored: as a task it could only fail
            empty.append(name)
        else:
            file_type = file_type_for(name)
            assert file_type is not None  # checked by _check_parts
            incoming.append(IncomingFile(name, file_type.name, file_type.content_type, content, None))
    _refuse_bad_files(too_large, empty, limit)
    return incoming


def _check_parts(parts: Sequence[UploadFile], settings: Settings) -> list[str]:
    """The sanitised names, once the count, every type and every declared size are acceptable."""
    max_files = settings.max_files_per_upload
    if not parts:
        raise InvalidInputError("Send at least one file in the multipart field 'files'.")
    if len(parts) > max_files:
        raise TooLargeError(f"Too many files in one upload: {len(parts)} (limit {max_files}).")
    names = [sanitize_filename(p.filename) for p in parts]
    unsupported = [n for n in names if file_type_for(n) is None]
    if unsupported:
        raise UnsupportedTypeError(
            f"Unsupported file type: {named(unsupported)}. Supported: {', '.join(SUPPORTED_EXTENSIONS)}."
        )
    limit = settings.max_upload_bytes
    too_large = [
        (n, p.size) for n, p in zip(names, parts, strict=True) if p.size is not None and p.size > limit
    ]
    if too_large:  # before reading a byte: the empty ones are told by their declared size too
        _refuse_bad_files(too_large, [n for n, p in zip(names, parts, strict=True) if p.size == 0], limit)
    return names


MAX_NAMED = 10  # file names a refusal lists; "and N others" after them


def named(names: Sequence[str]) -> str:
    """At most MAX_NAMED of `names`, then how many more: a refusal of 1,000 files stays a sentence."""
    shown = ", ".join(names[:MAX_NAMED])
    rest = len(names) - MAX_NAMED
    return f"{shown} and {rest} other{'s' if rest > 1 else ''}" if rest > 0 else shown


def repeated_names(files: Sequence[IncomingFile]) -> list[str]:
    """The (sanitised) names more than one file of the upload has, sorted."""
    counts = Counter(f.filename for f in files)
    return sorted(name for name, n in counts.items() if n > 1)


def repeated_warning(repeated: Sequence[str]) -> str:
    """An upload's warning (without replace=true, which refuses it) that names came more than once."""
    some = len(repeated) > 1
    return (
        f"{named([repr(n) for n in repeated])} {'are each' if some else 'is'} the name of more than one file"
        " of this upload: each file is a document of its own (one with the same bytes as another is a"
        f" duplicate of it), and {'those' if some else 'these'} documents share the name. Send each name"
        " once (a folder's path in the name tells files apart) to find them by name later."
    )


def _refuse_bad_files(too_large: Sequence[tuple[str, int | None]], empty: Sequence[str], limit: int) -> None:
    """TooLargeError naming every file over `limit` (size: when known) and, after them, every empty one;
    else InvalidInputError naming every empty file; else nothing."""
    empty_part = ""
    if len(empty) == 1:
        empty_part = f"{empty[0]} is empty (0 bytes): there is nothing in it to read."
    elif empty:
        empty_part = f"{len(empty)} files are empty (0 bytes), with nothing in them to read: {named(empty)}."
    if not too_large:
        if empty:
            raise InvalidInputError(empty_part)
        return
    if len(too_large) == 1:
        name, size = too_large[0]
        if size is None:
            sentence = f"{name} is over the limit of {_mb(limit)}."
        else:
            shown, most = _sizes(size, limit)
            sentence = f"{name} is {shown}, over the limit of {most}."
    else:
        # In bytes for all when MB would show one of them as the limit itself (see _sizes).
        exact = any(size is not None and _mb(size) == _mb(limit) for _, size in too_large)
        most = f"{limit:,} bytes" if exact else _mb(limit)
        listed = [
            name if size is None else f"{name} ({f'{size:,} bytes' if exact else _mb(size)})"
            for name, size in too_large
        ]
        sentence = f"{len(too_large)} files are over the limit of {most} per file: {named(listed)}."
    raise TooLargeError(f"{sentence} {empty_part}".rstrip())


async def _read_limited(part: UploadFile, limit: int) -> bytes | None:
    """The part's bytes, counted as they are read; None as soon as they exceed the limit."""
    buffer = bytearray()
    while chunk := await part.read(READ_CHUNK):
        buffer += chunk
        if len(buffer) > limit:
            return None
    return bytes(buffer)


def read_collection_field(values: Sequence[UploadFile | str]) -> str:
    """The form field `collection` (name or id); absent: `default`. Given twice or as a file: 422."""
    if not values:
        return DEFAULT_COLLECTION
    if len(values) > 1 or not isinstance(values[0], str):
        raise InvalidInputError("Send the form field 'collection' once, as text (a collection name or id).")
    try:
        value = clean_text(values[0])
    except ValueError as exc:
        raise InvalidInputError(f"collection: {exc}") from None
    return value or DEFAULT_COLLECTION


def _one_text(values: Sequence[UploadFile | str], field: str) -> str | None:
    if not values:
        return None
    if len(values) > 1 or not isinstance(values[0], str):
        raise InvalidInputError(f"Send the form field '{field}' at most once, as text.")
    return values[0]


@dataclass(frozen=True)
class UploadOptions:
    """The upload's form fields besides `files` and `collection`."""

    metadata: dict[str, Any] | None  # every file's; None: the field was absent ({} was given: clear)
    file_metadata: dict[str, dict[str, Any]]  # by (sanitised) file name, on top of `metadata`
    replace: bool  # a file named like a document of the collection replaces it


def read_upload_options(
    metadata: Sequence[UploadFile | str],
    file_metadata: Sequence[UploadFile | str],
    replace: Sequence[UploadFile | str],
) -> UploadOptions:
    """Parse and check `metadata` (a JSON object), `file_metadata` (a JSON object of file name ->
    object) and `replace` (true/false); a 422 sentence for anything else."""
    raw = _one_text(metadata, "metadata")
    common = parse_metadata_json(raw, "metadata") if raw is not None else None
    raw = _one_text(file_metadata, "file_metadata")
    per_file: dict[str, dict[str, Any]] = {}
    given_as: dict[str, str] = {}  # sanitised name -> the entry's name as sent
    if raw is not None:
        for name, value in parse_metadata_json(raw, "file_metadata").items():
            clean = sanitize_filename(name)
            if clean in given_as:
                # Files are matched by their sanitised name, so both entries would claim the same file
                # and one would be dropped without a word.
                raise InvalidInputError(
                    f"file_metadata names {given_as[clean]!r} and {name!r}, which are the same file name "
                    f"{clean!r} once cleaned: give it once."
                )
            given_as[clean] = name
            per_file[clean] = check_metadata(value, f"file_metadata[{name!r}]")
    flag = _one_text(replace, "replace")
    if flag not in (None, "true", "false"):
        raise InvalidInputError("The form field 'replace' must be true or false.")
    return UploadOptions(common, per_file, flag == "true")


def with_metadata(files: Sequence[IncomingFile], options: UploadOptions) -> list[IncomingFile]:
    """Each file with its metadata: the request-wide object, its own keys on top; None when neither
    field gives the file any (a replacement then keeps the document's, while `{}` clears it). A
    `file_metadata` name that is no file of this upload is a 422 (a typo would otherwise be lost
    silently)."""
    names = {f.filename for f in files}
    unknown = sorted(set(options.file_metadata) - names)
    if unknown:
        raise InvalidInputError(
            f"file_metadata names {', '.join(repr(n) for n in unknown[:5])}, not a file of this upload "
            f"(its files: {', '.join(repr(n) for n in sorted(names)[:10])})."
        )
    return [replace(f, metadata=_file_metadata(options, f.filename)) for f in files]


def _file_metadata(options: UploadOptions, filename: str) -> dict[str, Any] | None:
    own = options.file_metadata.get(filename)
    if options.metadata is None and own is None:
        return None
    return merge_metadata(options.metadata or {}, own)


async def read_replacement(
    files: Sequence[UploadFile | str], metadata: Sequence[UploadFile | str], settings: Settings
) -> IncomingFile:
    """PUT /documents/{id}/file's form: exactly one file part `file`, optional `metadata` (an object)."""
    if len(files) != 1 or not isinstance(files[0], UploadFile):
        raise InvalidInputError("Send exactly one file, in the multipart field 'file'.")
    (incoming,) = await read_upload(files, settings)
    raw = _one_text(metadata, "metadata")
    # Absent: None, the document keeps its metadata; `{}` is a value (it clears the metadata).
    return replace(incoming, metadata=parse_metadata_json(raw, "metadata") if raw is not None else None)
