"""A response the browser saves as a file: its Content-Disposition, with the name kept in UTF-8."""

from __future__ import annotations

from urllib.parse import quote


def attachment(filename: str) -> dict[str, str]:
    """The header of a download named `filename`: an ASCII stand-in for old clients, the real name in
    `filename*` (RFC 6266). A document's name with folders ("setup/README.md") is saved as its file's
    own name, and never as a hidden file (".env.md" as "env.md")."""
    own = filename.rpartition("/")[2]
    stem, dot, extension = own.rpartition(".") if "." in own else (own, "", "")
    stem = stem.lstrip(".") or "download"  # "..md": the extension's dot is not a leading one
    filename = f"{stem}.{extension}" if dot and extension else stem
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    utf8_name = quote(filename)
    return {"Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{utf8_name}"}
