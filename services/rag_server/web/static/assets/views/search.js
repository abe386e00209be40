// Search the selected collection: query, mode (hybrid, BM25, vector), number of results and filters, all
// in the URL (#/search?q=...&mode=bm25). Each hit shows the fused score and both legs' rank and score,
// and the answer shows the time each stage took: what hybrid adds is visible hit by hit.

import { api } from "../api.js";
import { clear, cutText, formatMs, fullTime, h, announce } from "../dom.js";
import { href, navigate } from "../router.js";
import { chunkNumber, chunkPlace, chunkSection, documentExists, FILE_TYPES } from "./document_common.js";
import { highlighted } from "./highlight.js";
import { METADATA_MAX, metadataFilter, parseMetadata } from "./metadata_filter.js";

// The Document choice lists this many, the first by name.
const LISTED = 500;
const DOC_GONE = "The document this search is limited to no longer exists (deleted, perhaps in another tab): choose All documents.";

const MODES = [
  ["hybrid", "Hybrid", "BM25 and vector, fused"],
  ["bm25", "BM25", "exact words"],
  ["vector", "Vector", "meaning"],
];
// Every stage the API times, in the order they run.
const STAGES = {
  embed: "embed query",
  vector: "vector leg",
  bm25: "BM25 leg",
  vector_exact: "exact vector recheck",
  group: "group by document",
  fuse: "fusion",
  floor: "similarity floor",
  fetch: "fetch text",
  total: "total",
};
const DEFAULT_K = 10;
const EXCERPT_CHARS = 700;
const CONTAINS_MAX = 1000; // the API's limit on a text of filters.text

// The API's min_similarity (-1..1), or "" for none: a number the URL or the field holds.
function floorValue(text) {
  const value = Number.parseFloat(text || "");
  return Number.isFinite(value) && value >= -1 && value <= 1 ? String(value) : "";
}

function searchParams(query) {
  const mode = MODES.some(([m]) => m === query.get("mode")) ? query.get("mode") : "hybrid";
  const k = Number.parseInt(query.get("k") || "", 10);
  return {
    q: query.get("q") || "",
    mode,
    k: Number.isFinite(k) && k >= 1 && k <= 100 ? k : DEFAULT_K,
    type: query.get("type") || "",
    doc: query.get("doc") || "",
    has: cutText((query.get("has") || "").trim(), CONTAINS_MAX),
    meta: cutText((query.get("meta") || "").trim(), METADATA_MAX),
    min: floorValue(query.get("min")),
  };
}

function searchHref(p) {
  const query = { q: p.q };
  if (p.mode !== "hybrid") query.mode = p.mode;
  if (p.k !== DEFAULT_K) query.k = String(p.k);
  if (p.type) query.type = p.type;
  if (p.doc) query.doc = p.doc;
  if (p.has) query.has = p.has;
  if (p.meta) query.meta = p.meta;
  if (p.min) query.min = p.min;
  return href("search", null, query);
}

function leg(name, value) {
  return h(
    "div",
    { class: `leg${value ? "" : " missing"}` },
    h("span", { class: "leg-name" }, name),
    value
      ? h("span", {}, h("span", { class: "leg-rank" }, `#${value.rank}`), " ", h("span", { class: "leg-score" }, value.score.toFixed(4)))
      : h("span", { class: "leg-rank", title: `Not among the ${name} leg's candidates` }, "—"),
  );
}

function hitElement(hit, rank, p) {
  return h(
    "li",
    { class: "hit card" },
    h(
      "div",
      { class: "hit-head" },
      // The digit alone read as "1": a screen reader says "Result 1" (an aria-label on a span is not read).
      h("span", { class: "hit-rank" }, h("span", { class: "visually-hidden" }, `Result ${rank}`), h("span", { "aria-hidden": "true" }, String(rank))),
      h(
        "div",
        { class: "hit-title" },
        h("a", { href: href("documents", hit.document_id) }, hit.document_name),
        h(
          "span",
          { class: "muted small" },
          [chunkPlace(hit), `chunk ${chunkNumber(hit)}`].filter(Boolean).join(" · "),
        ),
        chunkSection(hit, "hit-section"),
      ),
      h("div", { class: "hit-score", title: p.mode === "hybrid" ? "Fused score" : "Score" }, h("span", { class: "muted small" }, p.mode === "hybrid" ? "fused" : "score"), " ", hit.score.toFixed(4)),
    ),
    h("p", { class: "hit-text" }, highlighted(hit.text, hit.highlights, EXCERPT_CHARS)),
    h("div", { class: "legs" }, leg("Vector", hit.vector), leg("BM25", hit.bm25)),
  );
}

function timingsElement(timings) {
  const entries = Object.entries(timings);
  const ordered = [
    ...Object.keys(STAGES).filter((k) => k in timings).map((k) => [k, timings[k]]),
    ...entries.filter(([k]) => !(k in STAGES)),
  ];
  return h(
    "dl",
    { class: "timings", "aria-label": "Time per stage" },
    ordered.map(([k, ms]) => h("div", { class: `timing${k === "total" ? " total" : ""}` }, h("dt", {}, STAGES[k] || k), h("dd", {}, formatMs(ms)))),
  );
}

export function mount(root, ctx, route) {
  let p = searchParams(route.query);
  let controller = null;

  const queryInput = h("input", { type: "search", id: "search-query", name: "q", dir: "auto", required: true, autocomplete: "off", placeholder: "What are you looking for?", value: p.q });
  const modeInputs = MODES.map(([value, label, hint]) =>
    h(
      "label",
      { class: "mode" },
      h("input", { type: "radio", name: "mode", value, checked: value === p.mode }),
      h("span", { title: hint }, label),
    ),
  );
  const kInput = h("input", { type: "number", id: "search-k", min: 1, max: 100, value: String(p.k), inputmode: "numeric" });
  const typeSelect = h("select", { id: "search-type" }, h("option", { value: "" }, "All types"), FILE_TYPES.map((t) => h("option", { value: t }, t.toUpperCase())));
  const docSelect = h("select", { id: "search-doc" }, h("option", { value: "" }, "All documents"));
  const containsInput = h("input", {
    type: "search",
    id: "search-contains",
    dir: "auto",
    maxlength: String(CONTAINS_MAX),
    placeholder: "Exact words",
    title: "Only passages whose text holds these exact words (case as written)",
    autocomplete: "off",
    spellcheck: "false",
  });
  const floorInput = h("input", {
    type: "number",
    id: "search-floor",
    min: "-1",
    max: "1",
    step: "any",
    placeholder: "none",
    title: "Leave out passages whose cosine similarity with the query is below this, unless they hold every word of it",
  });
  // Applied with the next search (Enter in it submits); a valid change re-runs a query already there.
  const metadata = metadataFilter("search-metadata", (meta) => {
    if (meta !== p.meta && queryInput.value.trim()) form.requestSubmit();
  });
  const status = h("p", { class: "muted small search-status", "aria-live": "polite" });
  const error = h("p", { class: "form-error", role: "alert" });
  const results = h("ol", { class: "hits", "aria-label": "Results" });
  const timings = h("div", { class: "timings-wrap" });

  const form = h(
    "form",
    { class: "search-form card", role: "search" },
    h(
      "div",
      { class: "search-main" },
      h("label", { for: "search-query", class: "visually-hidden" }, "Query"),
      queryInput,
      h("button", { type: "submit", class: "primary" }, "Search"),
    ),
    h(
      "div",
      { class: "search-options" },
      h("fieldset", { class: "modes" }, h("legend", { class: "visually-hidden" }, "Mode"), modeInputs),
      h("label", { class: "field", for: "search-k" }, h("span", {}, "Results"), kInput),
      h("label", { class: "field", for: "search-type" }, h("span", {}, "File type"), typeSelect),
      h("label", { class: "field", for: "search-doc" }, h("span", {}, "Document"), docSelect),
      h("label", { class: "field contains-filter", for: "search-contains" }, h("span", {}, "Contains"), containsInput),
      h("label", { class: "field floor-filter", for: "search-floor" }, h("span", {}, "Min similarity"), floorInput),
      metadata.field,
    ),
    metadata.note,
  );
  root.append(
    h(
      "div",
      { class: "page search" },
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Search"), h("p", { class: "muted small" }, `Collection ${ctx.collection}`))),
      form,
      error,
      status,
      timings,
      results,
    ),
  );

  // The form's search, or null while the metadata filter is no JSON object (its note says why).
  function formParams() {
    const match = metadata.check();
    if (!match.ok) return null;
    const k = Number.parseInt(kInput.value, 10);
    return {
      q: queryInput.value.trim(),
      mode: form.querySelector("input[name=mode]:checked")?.value || "hybrid",
      k: Number.isFinite(k) ? Math.min(100, Math.max(1, k)) : DEFAULT_K,
      type: typeSelect.value,
      doc: docSelect.value,
      has: containsInput.value.trim(),
      meta: match.text,
      min: floorValue(floorInput.value),
    };
  }

  function fill() {
    queryInput.value = p.q;
    for (const input of form.querySelectorAll("input[name=mode]")) input.checked = input.value === p.mode;
    kInput.value = String(p.k);
    typeSelect.value = p.type;
    ensureDocOption(p.doc);
    docSelect.value = p.doc;
    containsInput.value = p.has;
    floorInput.value = p.min;
    metadata.show(p.meta);
  }

  // A document id from the URL that is not among the listed ones (beyond the first 500) still selects, under
  // its name once the list is in (a deleted one keeps "The chosen document": the search says it is gone).
  let listed = false;
  function ensureDocOption(id) {
    if (!id || [...docSelect.options].some((o) => o.value === id)) return;
    const option = h("option", { value: id }, "The chosen document");
    docSelect.append(option);
    if (listed) nameOption(option);
  }
  async function nameOption(option) {
    try {
      option.textContent = (await api(`/documents/${encodeURIComponent(option.value)}`)).filename;
    } catch {
      /* gone, or unreachable: the search says which */
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = formParams();
    if (next === null) {
      metadata.input.focus();
      return;
    }
    if (!next.q) {
      queryInput.focus();
      return;
    }
    const target = searchHref(next);
    // The same search again (a re-run) changes no URL: run it directly.
    if (target === location.hash) run();
    else navigate(target);
  });
  // A different mode or filter re-runs the current query at once.
  for (const el of [typeSelect, docSelect, floorInput, ...form.querySelectorAll("input[name=mode]")]) {
    el.addEventListener("change", () => {
      if (queryInput.value.trim()) form.requestSubmit();
    });
  }

  // Documents of one name (a changed file uploaded again without replace): told apart by when they came.
  function docLabels(items) {
    const counts = new Map();
    for (const d of items) counts.set(d.filename, (counts.get(d.filename) || 0) + 1);
    const label = (d) => (counts.get(d.filename) > 1 ? `${d.filename} (uploaded ${fullTime(d.created_at)}, id ${d.id.slice(0, 8)})` : d.filename);
    return new Map(items.map((d) => [d.id, label(d)]));
  }

  async function loadDocuments() {
    try {
      const query = { collection: ctx.collection, limit: LISTED, sort: "name", order: "asc", status: "ready" };
      const { items, total } = await api("/documents", { query });
      const labels = docLabels(items);
      for (const d of items) if (d.id !== p.doc) docSelect.append(h("option", { value: d.id }, labels.get(d.id)));
      // The rest of a big collection is no option: said, with the way to search in one of them.
      const rest = total - items.length;
      if (rest > 0) docSelect.append(h("option", { value: "", disabled: true }, `${rest} more not listed: open one in Documents, then “Search in it”`));
      listed = true;
      const chosen = [...docSelect.options].find((o) => o.value === p.doc && o.textContent === "The chosen document");
      if (chosen && labels.has(p.doc)) chosen.textContent = labels.get(p.doc);
      else if (chosen) nameOption(chosen);
    } catch {
      /* the filter is optional: search still works without the list */
    }
  }

  async function run() {
    controller?.abort();
    clear(error);
    document.title = p.q ? `${p.q} · Search · rag-server` : "Search · rag-server";
    const match = parseMetadata(p.meta);
    // No query, or a filter from the URL that is no JSON object (the field's note says why): no search.
    if (!p.q || !match.ok) {
      clear(results);
      clear(timings);
      status.textContent = p.q ? "" : "Type a query: hybrid search combines exact words (BM25) with meaning (vector).";
      return;
    }
    controller = new AbortController();
    status.textContent = "Searching…";
    results.setAttribute("aria-busy", "true");
    const filters = {};
    if (p.type) filters.file_types = [p.type];
    if (p.doc) filters.document_ids = [p.doc];
    if (p.has) filters.text = { $contains: p.has };
    if (match.value) filters.metadata = match.value;
    let answer;
    try {
      answer = await api("/search", {
        method: "POST",
        signal: controller.signal,
        json: {
          query: p.q,
          search_type: p.mode,
          top_k: p.k,
          collections: [ctx.collection],
          filters: Object.keys(filters).length ? filters : undefined,
          min_similarity: p.min ? Number(p.min) : undefined,
          highlight: true,
        },
      });
    } catch (err) {
      if (err.name === "AbortError") return;
      results.removeAttribute("aria-busy");
      // The previous query's hits and timings would read as this query's answer.
      clear(results);
      clear(timings);
      status.textContent = "";
      error.textContent = err.message;
      return;
    }
    results.removeAttribute("aria-busy");
    clear(results).append(...answer.results.map((hit, i) => hitElement(hit, i + 1, p)));
    clear(timings).append(timingsElement(answer.timings_ms));
    const n = answer.results.length;
    const none = p.min
      ? `No passage reaches similarity ${p.min} or holds every word of the query: nothing here bears on it.`
      : "No results. Try other words, or the vector mode for meaning.";
    status.textContent = n ? `${n} result${n === 1 ? "" : "s"} · ${MODES.find(([m]) => m === p.mode)[1]}` : none;
    const shown = controller; // a newer search meanwhile has its own status
    if (!n && p.doc && !(await documentExists(p.doc)) && shown === controller) status.textContent = DOC_GONE;
    announce(status.textContent);
  }

  fill();
  loadDocuments();
  run();
  if (!p.q) queryInput.focus();

  return {
    update(newRoute) {
      p = searchParams(newRoute.query);
      fill();
      run();
    },
    unmount() {
      controller?.abort();
      metadata.destroy();
    },
  };
}
