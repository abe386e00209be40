"""A word typed without its accents finds the accented text by BM25 (migration 0027 folds them) and the
Search view marks the word as the text writes it ("eleve" marks "élève", "Strasse" marks "Straße"); a
word typed with accents marks the text written without. Other scripts keep their marks (й is not и).
A word typed or pasted with a ligature ("ﬁnancial", U+FB01, a PDF's text) is stored and searched spelled
out (text.canonical), and marks "financial" in a hit and in the document's "Find in chunks" (QA,
2026-12-06: found, but nothing marked)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from tests.browser.conftest import Stack
from tests.browser.seed import bearer, upload_and_wait

FILES = {
    "ecole.txt": "L'élève présente sa carte à l'entrée de l'École.".encode(),
    "strasse.txt": "Die Straße vor dem Rathaus wird im Frühjahr gesperrt.".encode(),
    "cafe.txt": b"The cafe near the station serves creme brulee until noon.",
    "russian.txt": "Йод и йогурт лежат в холодильнике.".encode(),
    "report.txt": "Quarterly report. The \ufb01nancial \ufb02ows of the company improved.".encode(),
}


@pytest.fixture(scope="module")
async def documents(stack: Stack) -> dict[str, dict[str, Any]]:
    tasks = await upload_and_wait(stack, FILES)
    assert {t["status"] for t in tasks.values()} == {"completed"}, tasks
    return tasks


@pytest.mark.parametrize(
    ("query", "name", "marked"),
    [
        ("eleve ecole", "ecole.txt", ["élève", "École"]),
        ("Strasse fruhjahr", "strasse.txt", ["Straße", "Frühjahr"]),
        ("café crème", "cafe.txt", ["cafe", "creme"]),
        ("йогурт иод", "russian.txt", ["йогурт"]),
        ("financial flows", "report.txt", ["financial", "flows"]),
        ("\ufb01nancial \ufb02ows", "report.txt", ["financial", "flows"]),
    ],
)
async def test_an_unaccented_word_finds_and_marks_the_accented_one(
    page: Page, documents: dict[str, dict[str, Any]], query: str, name: str, marked: list[str]
) -> None:
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.get_by_label("Query").fill(query)
    await page.get_by_role("radio", name="BM25", exact=True).check()
    await page.get_by_role("button", name="Search", exact=True).click()
    hits = page.locator(".hit")
    await expect(hits).to_have_count(1)
    await expect(hits.first.locator(".hit-title a")).to_have_text(name)
    await expect(hits.first.locator(".hit-text mark")).to_have_text(marked)


async def test_a_query_typed_decomposed_marks_the_whole_word(
    page: Page, documents: dict[str, dict[str, Any]]
) -> None:
    """A query typed or pasted decomposed (macOS, a PDF's text: "e" + U+0301): the server composes it and
    BM25 finds the text; the highlighter must mark the words, not the pieces between the marks ("lè", "ve",
    which \\p{L} alone splits "élève" into, and which also mark "ve" inside any other word)."""
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.get_by_label("Query").fill(unicodedata.normalize("NFD", "élève école"))
    await page.get_by_role("radio", name="BM25", exact=True).check()
    await page.get_by_role("button", name="Search", exact=True).click()
    hits = page.locator(".hit")
    await expect(hits).to_have_count(1)
    await expect(hits.first.locator(".hit-title a")).to_have_text("ecole.txt")
    await expect(hits.first.locator(".hit-text mark")).to_have_text(["élève", "École"])


@pytest.mark.parametrize("find", ["financial", "\ufb01nancial"])
async def test_a_ligature_in_find_in_chunks_marks_the_word(
    page: Page, stack: Stack, documents: dict[str, dict[str, Any]], find: str
) -> None:
    doc = documents["report.txt"]["document_id"]
    await page.goto(f"{stack.base_url}/#/documents/{doc}?find={find}")
    await expect(page.locator("#find-count")).to_contain_text("1 chunk holds")
    await expect(page.locator("main mark")).to_have_text(["financial"])


async def bm25_hits_alone(page: Page, stack: Stack, name: str, text: str, query: str) -> Locator:
    """The BM25 hits of `query` in a collection `name` of its own holding `text` as `<name>.txt` (the
    default collection's cases expect their own hits), searched in the web app."""
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers=bearer(stack.admin_key), timeout=60
    ) as admin:
        assert (await admin.post("/collections", json={"name": name})).status_code == 201
    tasks = await upload_and_wait(stack, {f"{name}.txt": text.encode()}, collection=name)
    assert tasks[f"{name}.txt"]["status"] == "completed", tasks
    await page.reload()  # the switcher lists the collections there were at sign-in
    await page.get_by_label("Collection").select_option(name)
    await page.get_by_role("link", name="Search", exact=True).click()
    await page.get_by_label("Query").fill(query)
    await page.get_by_role("radio", name="BM25", exact=True).check()
    await page.get_by_role("button", name="Search", exact=True).click()
    return page.locator(".hit")


async def test_a_word_is_marked_where_a_word_starts_not_inside_another(page: Page, stack: Stack) -> None:
    """BM25 reads "Hauptstraße" as one word (hauptstrasse): a search for "Strasse" finds the chunk by the
    street standing alone, and only that is marked, not "straße" at the end of the main street's name.
    In a collection of its own: the default one's "Strasse fruhjahr" case above expects one hit."""
    text = "Die Hauptstraße kreuzt die Strasse am Markt; die Hauptstrasse ist gesperrt."
    hits = await bm25_hits_alone(page, stack, "streets", text, "Strasse")
    await expect(hits).to_have_count(1)
    await expect(hits.first.locator(".hit-title a")).to_have_text("streets.txt")
    await expect(hits.first.locator(".hit-text mark")).to_have_text(["Strasse"])


async def test_a_number_is_marked_where_bm25_reads_it_as_a_word(page: Page, stack: Stack) -> None:
    """A decimal is one word to BM25 ("10.5"): a search for "2024 10" marks every 2024, the ones after a
    hyphen too (migration 0028 reads "FY-2024" as `fy` and `2024`), and not "10" inside "10.5%"."""
    text = "Results for FY-2024 and Q3-2024 were 10.5% above the 2024 target."
    hits = await bm25_hits_alone(page, stack, "fiscal", text, "2024 10")
    await expect(hits).to_have_count(1)
    await expect(hits.first.locator(".hit-text mark")).to_have_text(["2024", "2024", "2024"])


async def test_the_stemmer_decides_what_is_marked(page: Page, stack: Stack) -> None:
    """The server marks what BM25 matched: "vacation" marks "vacations" whole (the same word to the English
    stemmer) and "state" does not mark the start of "statement" (another word). The browser's copy of the
    rules marked "vacation" inside "vacations" and "state" inside "statement" (QA, 2026-12-07)."""
    text = "Unused vacations carry over. The statement of the state of leave is sent in January."
    hits = await bm25_hits_alone(page, stack, "leave", text, "vacation state")
    await expect(hits).to_have_count(1)
    await expect(hits.first.locator(".hit-text mark")).to_have_text(["vacations", "state"])


HIGHLIGHT_PROBE = """
async ([text, spans, limit]) => {
  const { highlighted } = await import('/assets/views/highlight.js');
  const box = document.createElement('p');
  box.append(...highlighted(text, spans, limit));
  return { text: box.textContent, marks: [...box.querySelectorAll('mark')].map((m) => m.textContent) };
}
"""


async def test_an_excerpt_cut_keeps_a_character_outside_the_bmp_whole(page: Page) -> None:
    """The Search view cuts a hit's text at 700 UTF-16 units: an emoji (two units) across the cut was cut
    in half, its lone first half shown as a replacement glyph, and a mark ending in it too."""
    text = "a" * 699 + "\U0001f600" + "b" * 10
    shown = await page.evaluate(HIGHLIGHT_PROBE, [text, [], 700])
    assert shown["text"] in ("a" * 699 + "…", "a" * 699 + "\U0001f600…"), shown["text"][-5:]
    # A marked word across the cut: its shown part is marked, whole characters only.
    text = "a " * 347 + "xyz\U0001f600\U0001f600 tail"  # the second emoji: units 699 and 700
    start = len("a " * 347)
    shown = await page.evaluate(HIGHLIGHT_PROBE, [text, [[start, start + 5]], 700])
    assert shown["marks"] == ["xyz\U0001f600"], shown["marks"]
    assert not re.search("[\ud800-\udfff]", shown["text"]), shown["text"][-8:]


async def test_an_excerpt_cut_keeps_a_flag_or_a_vowel_sign_with_its_character(page: Page) -> None:
    """Cut at whole code points, a flag (two regional indicators) across the cut kept its first half (a
    lone letter in a box), a skin tone was dropped from its hand, and a Devanagari vowel sign cut from its
    consonant was shown on a dotted circle: the cut is at the last whole grapheme within 700 units."""
    for cluster in ("\U0001f1eb\U0001f1f7", "\U0001f44d\U0001f3fd", "\u0915\u093f"):
        before = "a" * (700 - len(cluster.encode("utf-16-le")) // 2 + 1)  # the cluster ends one unit past 700
        shown = await page.evaluate(HIGHLIGHT_PROBE, [before + cluster + " b", [], 700])
        assert shown["text"] == before + "…", ascii(shown["text"][-4:])


async def test_a_filter_from_the_url_cut_to_its_limit_keeps_an_emoji_whole(page: Page, stack: Stack) -> None:
    """A link's "Contains" longer than the API's 1000 is cut to it: at 1000 UTF-16 units, an emoji across
    the cut left its first half, and the search was refused, "lone surrogate U+D83D at position 999"."""
    has = quote("vacation " + "a" * 990 + "\U0001f600")
    await page.goto(f"{stack.base_url}/#/search?q=vacation&has={has}")
    await expect(page.locator(".search-status")).to_contain_text("No results.")
    await expect(page.get_by_text("surrogate", exact=False)).to_have_count(0)


async def test_the_characters_of_a_cjk_word_marked_one_by_one_are_one_mark(page: Page) -> None:
    """BM25 reads CJK by characters, so the server marks 休暇 as 休 and 暇: two <mark>s side by side, which
    a screen reader announces as two highlights, one per character. Spans that touch are one mark."""
    shown = await page.evaluate(HIGHLIGHT_PROBE, ["休暇の申請", [[0, 1], [1, 2], [3, 4], [4, 5]], 700])
    assert shown["marks"] == ["休暇", "申請"], shown["marks"]
    assert shown["text"] == "休暇の申請"
