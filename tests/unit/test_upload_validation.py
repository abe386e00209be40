"""Upload validation in the domain (ingestion/upload.py): domain errors, no HTTP, nothing stored."""

from __future__ import annotations

import io

import pytest
from starlette.datastructures import UploadFile

from rag_server.config import Settings
from rag_server.errors import InvalidInputError, TooLargeError, UnsupportedTypeError
from rag_server.ingestion.upload import check_declared_size, read_upload

MB = 1024 * 1024


def part(name: str, data: bytes, declared: bool = True) -> UploadFile:
    return UploadFile(io.BytesIO(data), filename=name, size=len(data) if declared else None)


def limits(**overrides: int) -> Settings:
    return Settings(database_url="postgresql://unused/db", **overrides)


async def test_valid_parts_become_incoming_files_with_sanitised_names() -> None:
    files = await read_upload([part("../notes/a.md", b"# A"), "a form field", part("b.TXT", b"b")], limits())
    assert [(f.filename, f.file_type, f.content) for f in files] == [
        ("a.md", "md", b"# A"),
        ("b.TXT", "txt", b"b"),
    ]
    assert (
        files[0].content_type == "text/markdown; charset=utf-8" and files[0].metadata is None
    )  # none given: not the same as {}


async def test_no_files_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match=r"^Send at least one file in the multipart field 'files'\.$"):
        await read_upload(["only a text field"], limits())


async def test_too_many_files_and_oversized_files_are_too_large() -> None:
    with pytest.raises(TooLargeError, match=r"^Too many files in one upload: 3 \(limit 2\)\.$"):
        await read_upload([part(f"{n}.txt", b"x") for n in range(3)], limits(max_files_per_upload=2))
    with pytest.raises(TooLargeError, match=r"^big\.txt is 2\.0 MB, over the limit of 1\.0 MB\.$"):
        await read_upload([part("big.txt", b"x" * 2 * MB)], limits(max_upload_bytes=MB))
    # Sizes that round to the same MB as the limit are given in bytes (not "1.0 MB, over 1.0 MB").
    with pytest.raises(
        TooLargeError, match=r"^big\.txt is 1,048,577 bytes, over the limit of 1,048,576 bytes\.$"
    ):
        await read_upload([part("big.txt", b"x" * (MB + 1))], limits(max_upload_bytes=MB))
    # Without a declared size the part is read counting bytes.
    with pytest.raises(TooLargeError, match=r"^big\.txt is over the limit of 1\.0 MB\.$"):
        await read_upload([part("big.txt", b"x" * 2 * MB, declared=False)], limits(max_upload_bytes=MB))
    # The whole request's bound: api/body_limit.py, as the body streams in (test_upload_streams.py).


async def test_every_unsupported_name_is_listed() -> None:
    with pytest.raises(UnsupportedTypeError, match=r"^Unsupported file type: a\.exe, b\.zip\. Supported: "):
        await read_upload([part("ok.txt", b"x"), part("a.exe", b"x"), part("b.zip", b"x")], limits())


def test_declared_content_length_over_the_limit() -> None:
    settings = limits(max_upload_request_bytes=MB)
    check_declared_size(None, settings)
    check_declared_size(str(MB), settings)
    check_declared_size("not a number", settings)
    with pytest.raises(
        TooLargeError, match=r"^The upload is 2\.0 MB, over the limit of 1\.0 MB per request; "
    ):
        check_declared_size(str(2 * MB), settings)
    with pytest.raises(
        TooLargeError, match=r"^The upload is 1,048,577 bytes, over the limit of 1,048,576 bytes "
    ):
        check_declared_size(str(MB + 1), settings)


async def test_every_empty_and_every_oversized_file_is_named() -> None:
    """Not just the first (QA): at most 10 names, then how many others; sizes first (a 413 naming the
    empty ones too), read sizes as declared ones."""
    empties = [part(f"e{n:02}.txt", b"") for n in range(13)]
    names = ", ".join(f"e{n:02}.txt" for n in range(10))
    with pytest.raises(
        InvalidInputError, match=rf"^13 files are empty \(0 bytes\), [^:]+: {names} and 3 others\.$"
    ):
        await read_upload([part("ok.txt", b"x"), *empties], limits())
    big = [part("a.txt", b"x" * 2 * MB), part("b.txt", b"x" * 3 * MB), part("z.txt", b"")]
    with pytest.raises(TooLargeError) as declared:
        await read_upload([part("ok.txt", b"x"), *big], limits(max_upload_bytes=MB))
    assert str(declared.value) == (
        "2 files are over the limit of 1.0 MB per file: a.txt (2.0 MB), b.txt (3.0 MB)."
        " z.txt is empty (0 bytes): there is nothing in it to read."
    )
    unknown = [part(n, b"x" * 2 * MB, declared=False) for n in ("c.txt", "d.txt")] + [
        part("y.txt", b"", False)
    ]
    with pytest.raises(TooLargeError) as counted:
        await read_upload(unknown, limits(max_upload_bytes=MB))
    assert str(counted.value) == (
        "2 files are over the limit of 1.0 MB per file: c.txt, d.txt."
        " y.txt is empty (0 bytes): there is nothing in it to read."
    )


async def test_unsupported_names_past_ten_say_how_many_others() -> None:
    parts = [part(f"p{n:02}.exe", b"x") for n in range(12)]
    with pytest.raises(
        UnsupportedTypeError, match=r"^Unsupported file type: p00\.exe, .*, p09\.exe and 2 others\. "
    ):
        await read_upload(parts, limits())
