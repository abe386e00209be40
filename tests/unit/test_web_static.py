"""The web app's files keep their rules: no HTML parsing of strings, no inline script or style, and the
shell announces every module and stylesheet (one round trip for the whole app)."""

from __future__ import annotations

import re
from pathlib import Path

from rag_server.web.serve import CONTENT_SECURITY_POLICY, STATIC_DIR

ASSETS = STATIC_DIR / "assets"
INDEX = (STATIC_DIR / "index.html").read_text()
# Each of these turns a string into markup or code; the app builds nodes and text only (dom.js).
FORBIDDEN = [
    "innerHTML",
    "outerHTML",
    "insertAdjacentHTML",
    "document.write",
    "eval(",
    "new Function",
    "srcdoc",
]


def scripts() -> list[Path]:
    return sorted(ASSETS.rglob("*.js"))


def test_no_script_parses_strings_as_html_or_code() -> None:
    for path in scripts():
        text = path.read_text()
        found = [word for word in FORBIDDEN if word in text]
        assert not found, f"{path.relative_to(STATIC_DIR)} uses {found}"


MAX_LINES = 400  # as for a Python module: one that grows past it is split by noun (chat_messages.js)


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(ASSETS)): n for p in scripts() if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines (split them by noun): {long}"


def test_the_shell_preloads_every_module_and_links_every_stylesheet() -> None:
    preloaded = set(re.findall(r'<link rel="modulepreload" href="/assets/([^"]+)">', INDEX))
    entry = set(re.findall(r'<script type="module" src="/assets/([^"]+)">', INDEX))
    modules = {str(p.relative_to(ASSETS)) for p in scripts()}
    assert entry == {"app.js"}
    assert preloaded == modules - entry
    styles = set(re.findall(r'<link rel="stylesheet" href="/assets/([^"]+)">', INDEX))
    assert styles == {str(p.relative_to(ASSETS)) for p in ASSETS.rglob("*.css")}


def test_no_inline_script_style_or_handler_in_the_shell() -> None:
    assert not re.search(r"<script(?![^>]*\bsrc=)", INDEX)
    assert "<style" not in INDEX and " style=" not in INDEX
    assert not re.search(r"\son[a-z]+=", INDEX)


def test_the_policy_allows_only_this_origin_for_scripts() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_the_type_filters_offer_every_type_the_server_stores() -> None:
    """The documents and search filters had no pptx or xlsx: documents of those types could not be picked."""
    from rag_server.ingestion.parsing import FILE_TYPES

    common = (ASSETS / "views" / "document_common.js").read_text()
    match = re.search(r"export const FILE_TYPES = \[([^\]]*)\];", common)
    assert match, "document_common.js exports FILE_TYPES"
    offered = re.findall(r'"([a-z]+)"', match.group(1))
    assert len(offered) == len(set(offered))
    assert set(offered) == {t.name for t in FILE_TYPES.values()}


def test_the_web_apps_canonical_form_spells_out_the_ligatures_the_server_does() -> None:
    """document_common.js's LIGATURES equal text.canonical's: a pasted "ﬁnancial" marks "financial"."""
    from rag_server.text import canonical

    common = (ASSETS / "views" / "document_common.js").read_text()
    match = re.search(r"const LIGATURES = \{([^}]*)\};", common)
    assert match, "document_common.js declares LIGATURES"
    pairs = {
        chr(int(code, 16)): letters for code, letters in re.findall(r'"\\u(\w{4})": "(\w+)"', match.group(1))
    }
    assert set(pairs) == {chr(c) for c in range(0xFB00, 0xFB07)}
    assert all(canonical(ligature) == letters for ligature, letters in pairs.items())
