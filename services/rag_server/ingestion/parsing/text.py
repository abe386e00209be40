"""Plain text, Markdown, HTML and JSON: decoding, and sections split at headings."""

from __future__ import annotations

import json
import re
from typing import Any

from rag_server.ingestion.parsing.base import MAX_HEADING_CHARS, Outline, ParseError, Section

_LATIN_CODE_PAGES = frozenset(
    [
        "cp1250",
        "cp1252",
        "cp1254",
        "cp1257",
        "iso8859_1",
        "iso8859_2",
        "iso8859_3",
        "iso8859_4",
        "iso8859_9",
        "iso8859_10",
        "iso8859_13",
        "iso8859_14",
        "iso8859_15",
        "iso8859_16",
        "latin_1",
        "mac_roman",
        "mac_latin2",
    ]
)


# Three or more non-ASCII characters in a row. Western text in Windows-1252 has its accented letters
# alone or in pairs between ASCII letters ("Straße", "Größe"); Cyrillic, Greek, Hebrew, Arabic or CJK
# text read as Windows-1252 has runs of them in every word of three letters or more.
_NON_ASCII_RUN = re.compile("[^\x00-\x7f]{3,}")
# What else Western text puts next to its letters: currency, quotes, dashes, degrees, ordinals...
_WESTERN_SIGNS = frozenset("€£¥¢‚„…–—‘’“”•«»‹›°±²³¹µ·§©®¿¡¼½¾×÷ªº")


def _western(content: bytes) -> str | None:
    """The text as Windows-1252 when it is plainly Western text in it (no NUL, which only UTF-16/32
    or binary data has; every non-ASCII character a letter or a sign, at most two in a row), else
    None. Short such text is what the detector gets wrong: "Übung macht den Meister." came out as
    Korean (johab), "Straße" as UTF-16, a German sentence as Mac Turkish."""
    if b"\x00" in content:
        return None
    try:
        text = content.decode("cp1252")
    except UnicodeDecodeError:
        return None
    if _NON_ASCII_RUN.search(text):
        return None
    if any(not (c.isalpha() or c in _WESTERN_SIGNS) for c in set(text) if c > "\x7f"):
        return None
    return text


def decode_text(content: bytes) -> str:
    """UTF-8 (with or without BOM) when valid, else plainly Western text as Windows-1252, else the
    detected charset, else Latin-1. Never raises."""
    for bom, encoding in ((b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if content.startswith(bom):
            return content.decode(encoding, errors="replace")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    if (western := _western(content)) is not None:
        return western
    from charset_normalizer import from_bytes

    best = from_bytes(content).best()
    if best is not None:
        # Short Western text often scores as some other single-byte code page (cp1257, cp1250...);
        # Windows-1252 is by far the most common legacy encoding, so prefer it among those.
        if best.encoding in _LATIN_CODE_PAGES:
            try:
                return content.decode("cp1252")
            except UnicodeDecodeError:
                pass
        return str(best)
    # Latin-1 maps every byte: the text may look odd but the worker never crashes on it.
    return content.decode("latin-1")


# Control characters (besides whitespace, escape and NUL, which UTF-16 text read as UTF-8 is full of)
# in the first BINARY_SAMPLE_CHARS of the text: over BINARY_SHARE, the file is binary data (a program,
# an archive, an image: 16-34% here), not text (0 for text in any encoding, ANSI-coloured logs too).
BINARY_SAMPLE_CHARS = 65_536
BINARY_SHARE = 0.10
# Fewer characters than this say too little (a 6-character DOS file ending in Ctrl-Z is 1/8 control).
BINARY_MIN_SAMPLE = 64
_BINARY = re.compile("[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f\ufffd]")


def decode_document(content: bytes) -> str:
    """The text of a text file (decode_text), or ParseError when it is binary data under a text name
    (its bytes would become chunks of noise)."""
    text = decode_text(content)
    sample = text[:BINARY_SAMPLE_CHARS].replace("\x00", "").removesuffix("\x1a")  # DOS's end-of-file
    share = len(_BINARY.findall(sample)) / len(sample) if len(sample) >= BINARY_MIN_SAMPLE else 0.0
    if share > BINARY_SHARE:
        raise ParseError(
            f"The file is binary data, not text ({share:.0%} of its first characters are control "
            "characters): it may be another kind of file under a text file's name, or text in an "
            "encoding that could not be detected."
        )
    return text


def parse_text(content: bytes) -> tuple[str | None, list[Section]]:
    return None, [Section(decode_document(content))]


# An ATX heading's opening: 1-6 #s and the spaces or tabs after them. Its closing #s are taken off with
# string operations: one pattern for both backtracked quadratically on a long run of spaces (a single
# line of 600 KB held a worker for most of an hour).
_ATX_OPEN = re.compile(r" {0,3}(#{1,6})[ \t]+")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def atx_heading(line: str) -> tuple[int, str] | None:
    """(level, raw title) of an ATX heading line (`## Install ##`), else None."""
    opening = _ATX_OPEN.match(line)
    if opening is None:
        return None
    title = line[opening.end() :].rstrip(" \t")
    closed = title.rstrip("#")
    if closed != title and closed.endswith((" ", "\t")):
        title = closed.rstrip(" \t")  # `## Install ##` -> Install
    return len(opening.group(1)), title


def heading_title(raw: str) -> str:
    """A Markdown heading as words: links keep their text; emphasis, code marks and inline HTML
    (`<a id="install"></a>` anchors) go. Only its start is read (its patterns are quadratic on a long
    run of `[` or `<`): a heading path keeps MAX_HEADING_CHARS of each heading anyway."""
    text = re.sub(r"<[^>]*>", "", _MD_LINK.sub(r"\1", raw[: 4 * MAX_HEADING_CHARS]))
    return re.sub(r"(\*\*|__|`|\*)", "", text).strip()


def markdown_sections(text: str) -> list[Section]:
    """Split at ATX headings (`#`..`######`), outside fenced code blocks."""
    outline = Outline()
    fence: str | None = None
    for line in text.split("\n"):
        marker = _FENCE.match(line)
        if fence is not None:
            if marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence):
                fence = None
            outline.body(line)
            continue
        if marker:
            fence = marker.group(1)
            outline.body(line)
            continue
        heading = atx_heading(line)
        if heading:
            outline.heading(heading[0], heading_title(heading[1]), line)
        else:
            outline.body(line)
    return outline.finish()


# An image (or any file) embedded as a base64 data URI, as many editors export Markdown: its payload is
# no text (1 MB of it made 8,930 chunks of noise, each embedded and searchable). The URI's type stays.
_DATA_URI = re.compile(r"(data:[\w.+-]+/[\w.+-]+(?:;[\w.+=-]+)*;base64,)[A-Za-z0-9+/=]{64,}")


def parse_markdown(content: bytes) -> tuple[str | None, list[Section]]:
    text = _DATA_URI.sub(r"\1…", decode_document(content))
    heading = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return (heading.group(1).strip() if heading else None), markdown_sections(text)


# Stand-ins for headings inside the HTML's text (private-use characters: str.strip() keeps them).
_HTML_HEADING = re.compile("^\ue000([1-6])\ue001(.*)$")


def parse_html(content: bytes) -> tuple[str | None, list[Section]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_document(content), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    if soup.title:
        soup.title.decompose()
    for tag in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
        words = " ".join(tag.get_text(" ").split())
        tag.replace_with(f"\n\ue000{tag.name[1]}\ue001{words}\n")
    outline = Outline()
    for raw in soup.get_text("\n").splitlines():
        line = raw.strip()
        heading = _HTML_HEADING.match(line)
        if heading:
            outline.heading(int(heading.group(1)), heading.group(2))
        elif line:
            outline.body(line)
    return title, outline.finish()


def parse_json(content: bytes) -> tuple[str | None, list[Section]]:
    try:
        # An integer as its digits: int() refuses a number over 4,300 digits (a ValueError the worker
        # took for an unexpected error, retried), and a chunk holds the digits anyway.
        value = json.loads(decode_document(content), parse_int=str)
    except json.JSONDecodeError as exc:
        raise ParseError(f"The file is not valid JSON ({exc.msg} at line {exc.lineno}).") from exc
    lines: list[str] = []
    _flatten_json(value, "", lines)
    return None, [Section("\n".join(lines))]


def _flatten_json(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten_json(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flatten_json(item, f"{path}[{i}]", out)
    elif value is not None and str(value).strip():
        out.append(f"{path}: {value}" if path else str(value))
