// One message of a conversation as DOM, and the passage dialog a citation opens. No state of its own:
// chat.js decides what to render and when.
//
// A message here: {role: "user"|"assistant", content, sources: [Source], mode?: "llm"|"extractive",
// llmError?, condensedQuery? (the standalone question a follow-up was searched as), streaming?: bool}.

import { download } from "../api.js";
import { append, h, plural, showModal, toast } from "../dom.js";
import { renderMarkdown } from "../markdown.js";
import { href } from "../router.js";
import { chunkPlace, chunkPlaceFact, chunkSection } from "./document_common.js";

// The excerpt was cited from a version of the document that has since been replaced.
function earlierVersion(source) {
  return source.stale ? `from an earlier version (v${source.document_version}; now v${source.current_version})` : null;
}

function where(source) {
  const at = chunkPlace(source);
  return at ? `${source.document_name}, ${at}` : source.document_name;
}

// The passage behind citation [n]: document, page (or slide, or sheet rows), the headings above it, score,
// the excerpt, and ways to the document.
export function openPassage(source, opener) {
  const titleId = `passage-title-${source.n}`;
  const close = h("button", { type: "button", class: "quiet", "aria-label": "Close passage" }, "Close");
  const downloadButton = h("button", { type: "button", disabled: source.document_deleted }, "Download");
  const place = chunkPlaceFact(source);
  const dialog = h(
    "dialog",
    { class: "passage", "aria-labelledby": titleId },
    h(
      "div",
      { class: "passage-head" },
      h("h2", { id: titleId }, h("span", { class: "cite-number" }, String(source.n)), " ", source.document_name),
      close,
    ),
    h(
      "dl",
      { class: "facts passage-facts" },
      // A file without pages (Markdown, text, HTML) has no place to name: no row, not "Page —".
      place ? h("dt", {}, place[0]) : null,
      place ? h("dd", {}, place[1]) : null,
      source.heading_path ? h("dt", {}, "Section") : null,
      source.heading_path ? h("dd", { class: "passage-section" }, source.heading_path) : null,
      h("dt", {}, "Score"),
      h("dd", {}, Number(source.score).toFixed(3)),
    ),
    source.document_deleted ? h("p", { class: "badge warn" }, "This document has since been deleted") : null,
    source.stale ? h("p", { class: "badge warn stale-source" }, `This excerpt is ${earlierVersion(source)}`) : null,
    h("blockquote", { class: "passage-excerpt", role: "figure", "aria-label": "Excerpt" }, source.excerpt),
    h(
      "div",
      { class: "row end" },
      source.document_deleted
        ? null
        : h("a", { class: "button-link", href: href("documents", source.document_id) }, "Open document"),
      downloadButton,
    ),
  );
  close.addEventListener("click", () => dialog.close());
  downloadButton.addEventListener("click", async () => {
    try {
      await download(`/documents/${encodeURIComponent(source.document_id)}/download`, source.document_name);
    } catch (err) {
      toast(err.message, "error");
    }
  });
  // Following the link leaves the chat: close first so the modal does not outlive the view.
  dialog.querySelector("a")?.addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (opener?.isConnected) opener.focus();
  });
  showModal(dialog);
  close.focus();
  return dialog;
}

function citationButton(source) {
  const button = h(
    "button",
    {
      type: "button",
      class: "cite",
      "aria-label": `Source ${source.n}: ${where(source)}`,
      title: where(source),
    },
    String(source.n),
  );
  button.addEventListener("click", () => openPassage(source, button));
  return button;
}

function bySource(sources) {
  const map = new Map();
  for (const s of sources || []) map.set(s.n, s);
  return map;
}

// The answer text as markdown; [n] becomes a button when source n exists.
export function renderAnswerBody(body, message) {
  const sources = bySource(message.sources);
  const citation = (n) => (sources.has(n) ? citationButton(sources.get(n)) : null);
  body.replaceChildren(renderMarkdown(message.content, { citation }));
  if (message.streaming) {
    // The caret ends the text being written: inside the last paragraph or list item, not below it.
    let target = body.lastElementChild;
    while (target && ["UL", "OL", "BLOCKQUOTE"].includes(target.tagName) && target.lastElementChild) {
      target = target.lastElementChild;
    }
    (target && target.tagName !== "PRE" ? target : body).append(h("span", { class: "caret", "aria-hidden": "true" }));
  }
}

// The numbers of `message`'s sources its answer cites: its [n] markers, read as the answer shows them
// (markdown.js: not those in code). The API lists every passage retrieved for the answer.
function citedNumbers(message) {
  const known = new Set(message.sources.map((s) => s.n));
  const cited = new Set();
  renderMarkdown(message.content, { citation: (n) => (known.has(n) ? (cited.add(n), document.createTextNode("")) : null) });
  return cited;
}

function sourceChip(s, cited) {
  const button = h(
    "button",
    {
      type: "button",
      class: cited ? "source-chip" : "source-chip uncited",
      "aria-label": `Open source ${s.n}${cited ? "" : " (not cited)"}: ${where(s)}`,
    },
    h("span", { class: "cite-number" }, String(s.n)),
    h("span", { class: "source-name" }, where(s)),
    chunkSection(s, "source-section"),
    s.document_deleted
      ? h("span", { class: "badge warn deleted-source", title: "This document has since been deleted" }, "deleted")
      : null,
    s.stale ? h("span", { class: "badge warn stale-source", title: earlierVersion(s) }, "earlier version") : null,
    h("span", { class: "source-score" }, Number(s.score).toFixed(2)),
  );
  button.addEventListener("click", () => openPassage(s, button));
  return h("li", {}, button);
}

// The passages retrieved for the answer: those it cites first (their numbers are its [n]), then the others,
// said to be retrieved only. "5 sources" under an answer citing [1] and [3] read as five cited.
function sourceList(message) {
  const sources = message.sources;
  if (!sources?.length) return null;
  const numbers = citedNumbers(message);
  const cited = sources.filter((s) => numbers.has(s.n));
  const others = sources.filter((s) => !numbers.has(s.n));
  const retrieved = plural(sources.length, "source", "sources");
  const summary = !others.length
    ? `${plural(cited.length, "cited source", "cited sources")}`
    : cited.length
      ? `${cited.length} cited · ${retrieved} retrieved`
      : `${retrieved} retrieved, none cited`;
  const group = (label, items, isCited) => [
    h("p", { class: "source-group muted small", "aria-hidden": "true" }, label),
    h("ol", { class: `source-list${isCited ? " cited" : " uncited"}`, "aria-label": label }, items.map((s) => sourceChip(s, isCited))),
  ];
  return h(
    "details",
    { class: "sources" },
    h("summary", {}, summary),
    cited.length ? group("Cited in the answer", cited, true) : null,
    others.length ? group(cited.length ? "Also retrieved, not cited" : "Retrieved, not cited", others, false) : null,
  );
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy"), 1500);
  } catch {
    toast("The browser did not allow copying.", "error");
  }
}

// The badges and notes under an answer; refreshed when `done` arrives.
export function renderAnswerFooter(footer, message) {
  footer.replaceChildren();
  if (message.streaming) return;
  const copyButton = h("button", { type: "button", class: "quiet small", "aria-label": "Copy answer" }, "Copy");
  copyButton.addEventListener("click", () => copy(message.content, copyButton));
  append(footer, [
    message.llmError
      ? h(
          "p",
          { class: "llm-note", role: "note" },
          h("strong", {}, "The LLM failed"),
          ", so this answer quotes the sources instead.",
          h("span", { class: "llm-detail" }, message.llmError),
        )
      : null,
    message.condensedQuery
      ? h("p", { class: "searched muted small" }, "Searched for: ", h("q", {}, message.condensedQuery))
      : null,
    h(
      "div",
      { class: "answer-tools" },
      message.mode === "extractive" ? h("span", { class: "badge warn", title: "Quoted from the sources, no LLM" }, "Extractive answer") : null,
      copyButton,
    ),
    sourceList(message),
  ]);
}

// A whole message. Assistant messages keep handles to their parts so streaming redraws only the body.
export function renderMessage(message) {
  if (message.role === "user") {
    return h(
      "article",
      { class: "msg msg-user", "aria-label": "You" },
      h("div", { class: "bubble" }, message.content),
    );
  }
  const body = h("div", { class: "answer-body markdown" });
  const footer = h("div", { class: "answer-footer" });
  renderAnswerBody(body, message);
  renderAnswerFooter(footer, message);
  const article = h(
    "article",
    { class: "msg msg-assistant", "aria-label": "Answer" },
    h("div", { class: "avatar", "aria-hidden": "true" }, "R"),
    h("div", { class: "answer" }, body, footer),
  );
  message.nodes = { article, body, footer };
  return article;
}

// The API's stored message -> the shape above.
export function fromHistory(m) {
  return {
    role: m.role,
    content: m.content,
    sources: m.sources || [],
    mode: m.metadata?.answer_mode,
    llmError: m.metadata?.llm_error || null,
    condensedQuery: m.metadata?.condensed_query || null,
  };
}

// The one document a stored chat's last answer was limited to (its metadata records the filters it was
// asked with), or null: a chat about one document reopened from the list stays about it.
export function documentLimit(history) {
  const last = history.findLast((m) => m.role === "assistant");
  const filters = last?.metadata?.filters;
  if (!filters || Object.keys(filters).length !== 1 || filters.document_ids?.length !== 1) return null;
  return filters.document_ids[0];
}
