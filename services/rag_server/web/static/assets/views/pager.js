// One pager for the lists shown a page at a time (the documents table, a document's chunks): First,
// Previous, "Page [n] of M", Next, Last, and where the page sits ("51–100 of 4000"). Every move is a URL
// (the list's own hrefOf(page)), so back, forward and reload keep the page; a list of thousands of pages
// is one click (Last) or one number away, not hundreds of clicks on Next.

import { h } from "../dom.js";
import { navigate } from "../router.js";

// The API's largest offset (api/deps.py MAX_OFFSET): a page number further than it (?page=99999999999
// typed by hand) was refused with a 422, which the document page read as "Document not found".
const MAX_OFFSET = 2 ** 31 - 1;

// The page asked for in the URL (?page=N): page 0, a negative or a non-number is page 1; a page past the
// end is asked for as it is, and the list then shows its last page (lastPageInstead).
export function pageOf(query, per) {
  const asked = Number.parseInt(query.get("page") || "1", 10);
  if (!(asked > 1)) return 1;
  return Math.min(asked, Math.floor(MAX_OFFSET / per) + 1);
}

export const pageCount = (total, per) => Math.max(1, Math.ceil(total / per));

// A page past the end (an old link, a list that shrank, ?page=999 typed by hand) came back empty: the last
// page's number, to be shown instead of nothing under "4951–4950 of 500"; null when the page is fine.
export function lastPageInstead(page, per, total, count) {
  return count || !total || page <= 1 ? null : pageCount(total, per);
}

// labels: the accessible names {first, previous, next, last, page} (the page number's field); hrefOf(n):
// the list's URL at page n. Made once per list and kept across redraws, so the focus stays on the control
// used. show() draws it for a page of the list; `el` is the pager.
export function pager(labels, hrefOf) {
  let page = 1;
  let pages = 1;
  const go = (n) => {
    if (n !== page) navigate(hrefOf(n));
  };
  const button = (label, text, onclick) => h("button", { type: "button", "aria-label": label, onclick }, text);
  const first = button(labels.first, "« First", () => go(1));
  const previous = button(labels.previous, "‹ Previous", () => go(page - 1));
  const next = button(labels.next, "Next ›", () => go(page + 1));
  const last = button(labels.last, "Last »", () => go(pages));
  const input = h("input", { type: "number", min: "1", step: "1", inputmode: "numeric", "aria-label": labels.page });
  const of = document.createTextNode("");
  // A number typed is gone to on Enter (or on leaving the field: "change"), kept within 1..M; what is no
  // number (the field emptied) puts the page shown back.
  input.addEventListener("change", () => {
    const n = Number.parseInt(input.value, 10);
    if (Number.isNaN(n)) input.value = String(page);
    else go(Math.min(Math.max(n, 1), pages));
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") input.value = String(page);
  });
  const where = h("label", { class: "pager-page" }, "Page ", input, of);
  const range = h("span", { class: "pager-range muted", "aria-live": "polite" });
  const el = h("div", { class: "pager" }, first, previous, h("div", { class: "pager-where" }, where, range), next, last);

  // page: the page shown; count: the items on it; text: what precedes the range ("Chunks", "Matches").
  function show({ page: shown, per, total, count, text = "" }) {
    const from = total ? (shown - 1) * per + 1 : 0;
    const to = (shown - 1) * per + count;
    const moved = shown !== page;
    page = shown;
    pages = pageCount(total, per);
    range.textContent = total ? `${text ? `${text} ` : ""}${from}–${to} of ${total}` : text;
    // Not while a number is being typed into it (a refresh of the same page): only when the page changed.
    if (moved || document.activeElement !== input) input.value = String(page);
    input.max = String(pages);
    // Wide enough for the last page's number and the field's arrows, however many digits it has.
    input.style.width = `${String(pages).length + 3}ch`;
    of.textContent = ` of ${pages}`;
    // One page: only the count; the moves would all be disabled.
    for (const control of [first, previous, next, last, where]) control.hidden = pages <= 1;
    const focused = el.contains(document.activeElement) ? document.activeElement : null;
    first.disabled = previous.disabled = page <= 1;
    next.disabled = last.disabled = page >= pages;
    // The button just used is disabled at the end it led to (Last, Next on the last page): the focus goes
    // to the page's number, not out of the pager to the top of the page.
    if (focused?.disabled) input.focus();
  }

  return { el, show };
}
