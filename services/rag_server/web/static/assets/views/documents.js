// Documents of the selected collection: the table (sort, filters, paging, all in the URL), per-row
// download and delete, the upload panel for editors, and one document's details and chunks
// (#/documents/<id>).

import { api, ApiError, download } from "../api.js";
import { append, clear, confirmDialog, formatBytes, formatDate, h, toast, announce } from "../dom.js";
import { href, navigate } from "../router.js";
import { uploadPanel } from "./upload_panel.js";

const PAGE_SIZES = [10, 25, 50, 100];
const PAGE_SIZE = 50;
const CHUNK_PAGE = 50;
const REFRESH_MS = 4000;
const STATUSES = ["queued", "processing", "ready", "failed"];
const TYPES = ["pdf", "docx", "txt", "md", "html", "csv", "json"];
// Column -> the API's sort key, and the order a first click asks for (names A-Z, numbers and dates biggest
// or newest first).
const COLUMNS = [
  { key: "name", label: "Name", first: "asc" },
  { key: "type", label: "Type", first: "asc" },
  { key: "status", label: "Status", first: "asc" },
  { key: "chunks", label: "Chunks", first: "desc", numeric: true },
  { key: "size", label: "Size", first: "desc", numeric: true },
  { key: "uploaded", label: "Uploaded", first: "desc" },
];
const NO_CHUNKS = {
  ready: "This document has no chunks.",
  failed: "No chunks: processing failed.",
  queued: "Chunks appear once processing is finished.",
};
const STATUS_TONE = { ready: "ok", failed: "error", queued: "", processing: "warn" };

// Replace el's children; null children (optional parts) are left out.
function fill(el, ...children) {
  return append(clear(el), children);
}

// The list's query last shown, so "back to documents" from a document returns to the same page.
let lastListQuery = "";

export function statusBadge(status) {
  return h("span", { class: `badge ${STATUS_TONE[status] ?? ""}` }, status);
}

function listParams(query) {
  const sort = COLUMNS.some((c) => c.key === query.get("sort")) ? query.get("sort") : "uploaded";
  const order = query.get("order") === "asc" || query.get("order") === "desc" ? query.get("order") : "desc";
  const page = Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1);
  const per = Number.parseInt(query.get("per") || "", 10);
  return {
    sort,
    order,
    page,
    per: PAGE_SIZES.includes(per) ? per : PAGE_SIZE,
    status: STATUSES.includes(query.get("status")) ? query.get("status") : "",
    type: query.get("type") || "",
  };
}

function listHref(params, changes) {
  const next = { ...params, ...changes };
  const query = {};
  if (next.sort !== "uploaded") query.sort = next.sort;
  if (next.order !== "desc") query.order = next.order;
  if (next.status) query.status = next.status;
  if (next.type) query.type = next.type;
  if (next.per !== PAGE_SIZE) query.per = String(next.per);
  if (next.page > 1) query.page = String(next.page);
  return href("documents", null, query);
}

async function downloadDocument(doc) {
  try {
    await download(`/documents/${doc.id}/download`, doc.filename);
  } catch (err) {
    toast(`Download failed: ${err.message}`, "error");
  }
}

async function deleteDocument(doc) {
  const ok = await confirmDialog(
    `Delete “${doc.filename}”? Its chunks leave search and chat at once. This cannot be undone.`,
    "Delete",
  );
  if (!ok) return false;
  try {
    await api(`/documents/${doc.id}`, { method: "DELETE" });
  } catch (err) {
    toast(`Not deleted: ${err.message}`, "error");
    return false;
  }
  toast(`Deleted ${doc.filename}`);
  return true;
}

function select(id, label, value, options, onchange) {
  return h(
    "label",
    { class: "field", for: id },
    h("span", {}, label),
    h(
      "select",
      { id, onchange: (e) => onchange(e.target.value) },
      options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
    ),
  );
}

function mountList(root, ctx, route) {
  let params = listParams(route.query);
  let controller = null;
  let timer = null;
  const canEdit = ctx.can("editor");

  const tableBody = h("tbody");
  const headRow = h("tr");
  const table = h(
    "table",
    { class: "documents-table" },
    h("caption", { class: "visually-hidden" }, `Documents in ${ctx.collection}`),
    h("thead", {}, headRow),
    tableBody,
  );
  const range = h("span", { class: "muted", "aria-live": "polite" });
  const prev = h("button", { type: "button", "aria-label": "Previous page" }, "‹ Previous");
  const next = h("button", { type: "button", "aria-label": "Next page" }, "Next ›");
  const filters = h("div", { class: "toolbar" });
  const empty = h("div", { class: "empty", hidden: true });
  const error = h("p", { class: "form-error", role: "alert" });
  const wrap = h("div", { class: "table-wrap" }, table);

  let panel = null;
  const uploadButton = canEdit
    ? h("button", { type: "button", class: "primary", "aria-expanded": "false", "aria-controls": "upload-panel" }, "Upload")
    : null;
  if (canEdit) {
    let settleTimer = null;
    panel = uploadPanel(ctx, {
      // Several files finishing together refresh the table once.
      onSettled: () => {
        clearTimeout(settleTimer);
        settleTimer = setTimeout(() => load(), 300);
      },
      onToggle: (open) => uploadButton.setAttribute("aria-expanded", String(open)),
    });
    uploadButton.addEventListener("click", () => {
      if (panel.isOpen()) panel.close();
      else {
        panel.open();
        panel.focus();
      }
    });
  }

  root.append(
    h(
      "div",
      { class: "page documents" },
      h(
        "div",
        { class: "page-head" },
        h("div", {}, h("h1", {}, "Documents"), h("p", { class: "muted small" }, `Collection ${ctx.collection}`)),
        uploadButton,
      ),
      panel?.el,
      filters,
      error,
      wrap,
      empty,
      h("div", { class: "pager" }, prev, range, next),
    ),
  );

  prev.addEventListener("click", () => navigate(listHref(params, { page: params.page - 1 })));
  next.addEventListener("click", () => navigate(listHref(params, { page: params.page + 1 })));

  function renderControls() {
    fill(filters,
      select("filter-status", "Status", params.status, [["", "All statuses"], ...STATUSES.map((s) => [s, s])], (v) =>
        navigate(listHref(params, { status: v, page: 1 })),
      ),
      select("filter-type", "Type", params.type, [["", "All types"], ...TYPES.map((t) => [t, t.toUpperCase()])], (v) =>
        navigate(listHref(params, { type: v, page: 1 })),
      ),
      select("page-size", "Per page", String(params.per), PAGE_SIZES.map((n) => [String(n), String(n)]), (v) =>
        navigate(listHref(params, { per: Number(v), page: 1 })),
      ),
      params.status || params.type
        ? h("a", { class: "clear-filters", href: listHref(params, { status: "", type: "", page: 1 }) }, "Clear filters")
        : null,
    );
    clear(headRow);
    for (const col of COLUMNS) {
      const active = params.sort === col.key;
      const order = active ? (params.order === "asc" ? "desc" : "asc") : col.first;
      const button = h(
        "button",
        { type: "button", class: "sort", onclick: () => navigate(listHref(params, { sort: col.key, order, page: 1 })) },
        col.label,
        h("span", { class: "sort-mark", "aria-hidden": "true" }, active ? (params.order === "asc" ? "▲" : "▼") : ""),
      );
      headRow.append(
        h(
          "th",
          { scope: "col", class: col.numeric ? "num" : null, "aria-sort": active ? (params.order === "asc" ? "ascending" : "descending") : "none" },
          button,
        ),
      );
    }
    headRow.append(h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")));
  }

  function documentRow(doc) {
    const actions = h(
      "div",
      { class: "row-actions" },
      h("button", { type: "button", class: "quiet", "aria-label": `Download ${doc.filename}`, onclick: () => downloadDocument(doc) }, "Download"),
      canEdit
        ? h(
            "button",
            {
              type: "button",
              class: "quiet danger-text",
              "aria-label": `Delete ${doc.filename}`,
              onclick: async () => {
                if (await deleteDocument(doc)) {
                  // The last row of a page gone: show the page before.
                  if (tableBody.children.length === 1 && params.page > 1) navigate(listHref(params, { page: params.page - 1 }));
                  else load();
                }
              },
            },
            "Delete",
          )
        : null,
    );
    return h(
      "tr",
      { dataset: { id: doc.id, status: doc.status } },
      h(
        "td",
        { class: "name-cell" },
        h("a", { href: href("documents", doc.id), title: "Details and chunks" }, doc.filename),
        doc.status === "failed" && doc.error ? h("p", { class: "row-error" }, doc.error) : null,
      ),
      h("td", {}, h("span", { class: "type" }, doc.file_type.toUpperCase())),
      h("td", {}, statusBadge(doc.status)),
      h("td", { class: "num" }, String(doc.chunk_count)),
      h("td", { class: "num" }, formatBytes(doc.size_bytes)),
      h("td", { class: "nowrap" }, h("time", { datetime: doc.created_at }, formatDate(doc.created_at))),
      h("td", {}, actions),
    );
  }

  function renderEmpty(total) {
    const filtered = params.status || params.type;
    empty.hidden = total > 0;
    wrap.hidden = total === 0;
    if (total > 0) return;
    fill(empty,
      h("p", { class: "empty-title" }, filtered ? "No document matches these filters." : "No documents in this collection yet."),
      filtered
        ? h("a", { href: listHref(params, { status: "", type: "", page: 1 }) }, "Clear filters")
        : h("p", { class: "muted" }, canEdit ? "Upload files to search them and chat about them." : "An editor can upload files here."),
    );
  }

  async function load() {
    controller?.abort();
    controller = new AbortController();
    clearTimeout(timer);
    wrap.setAttribute("aria-busy", "true");
    let data;
    try {
      data = await api("/documents", {
        signal: controller.signal,
        query: {
          collection: ctx.collection,
          limit: params.per,
          offset: (params.page - 1) * params.per,
          sort: params.sort,
          order: params.order,
          status: params.status,
          type: params.type,
        },
      });
    } catch (err) {
      if (err.name === "AbortError") return;
      error.textContent = err.message;
      wrap.removeAttribute("aria-busy");
      return;
    }
    error.textContent = "";
    wrap.removeAttribute("aria-busy");
    clear(tableBody).append(...data.items.map(documentRow));
    const first = data.total ? data.offset + 1 : 0;
    const last = data.offset + data.items.length;
    range.textContent = data.total ? `${first}–${last} of ${data.total}` : "0 of 0";
    prev.disabled = params.page <= 1;
    next.disabled = last >= data.total;
    renderEmpty(data.total);
    // Documents still being processed: keep their status and chunk counts current.
    if (data.items.some((d) => d.status === "queued" || d.status === "processing")) {
      timer = setTimeout(load, REFRESH_MS);
    }
  }

  renderControls();
  load();
  lastListQuery = listHref(params, {});

  return {
    update(newRoute) {
      params = listParams(newRoute.query);
      lastListQuery = listHref(params, {});
      renderControls();
      load();
    },
    unmount() {
      controller?.abort();
      clearTimeout(timer);
      panel?.destroy();
    },
  };
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

function mountDetail(root, ctx, route) {
  const id = route.id;
  let controller = null;
  const page = h("div", { class: "page document-detail" });
  root.append(page);

  async function load(query) {
    controller?.abort();
    controller = new AbortController();
    const chunkPage = Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1);
    const offset = (chunkPage - 1) * CHUNK_PAGE;
    let doc;
    let chunks;
    try {
      [doc, chunks] = await Promise.all([
        api(`/documents/${encodeURIComponent(id)}`, { signal: controller.signal }),
        api(`/documents/${encodeURIComponent(id)}/chunks`, { signal: controller.signal, query: { offset, limit: CHUNK_PAGE } }),
      ]);
    } catch (err) {
      if (err.name === "AbortError") return;
      const gone = err instanceof ApiError && (err.status === 404 || err.status === 422);
      fill(page,
        backLink(),
        h("h1", {}, gone ? "Document not found" : "Could not load the document"),
        h("p", { class: "form-error", role: "alert" }, gone ? "It was deleted, or it is in a collection this key cannot read." : err.message),
      );
      return;
    }
    render(doc, chunks, chunkPage);
  }

  function backLink() {
    return h("a", { class: "back", href: lastListQuery || href("documents") }, "← All documents");
  }

  function render(doc, chunks, chunkPage) {
    const collection = ctx.collections.find((c) => c.id === doc.collection_id)?.name ?? doc.collection_id;
    const canEdit = ctx.can("editor");
    const actions = h(
      "div",
      { class: "row" },
      h("button", { type: "button", onclick: () => downloadDocument(doc) }, "Download"),
      canEdit
        ? h(
            "button",
            {
              type: "button",
              class: "danger-outline",
              onclick: async () => {
                if (await deleteDocument(doc)) navigate(lastListQuery || href("documents"));
              },
            },
            "Delete",
          )
        : null,
    );
    const first = chunks.total ? chunks.offset + 1 : 0;
    const last = chunks.offset + chunks.items.length;
    const pager = h(
      "div",
      { class: "pager" },
      h("button", { type: "button", "aria-label": "Previous chunks", disabled: chunkPage <= 1, onclick: () => navigate(href("documents", id, { page: chunkPage - 1 })) }, "‹ Previous"),
      h("span", { class: "muted" }, chunks.total ? `Chunks ${first}–${last} of ${chunks.total}` : "No chunks"),
      h("button", { type: "button", "aria-label": "Next chunks", disabled: last >= chunks.total, onclick: () => navigate(href("documents", id, { page: chunkPage + 1 })) }, "Next ›"),
    );
    fill(page,
      backLink(),
      h("div", { class: "page-head" }, h("h1", { class: "doc-title" }, doc.filename), actions),
      h("p", { class: "row" }, statusBadge(doc.status), h("span", { class: "type" }, doc.file_type.toUpperCase())),
      doc.status === "failed"
        ? h("div", { class: "callout error", role: "note" }, h("strong", {}, "Processing failed: "), doc.error || "no reason was recorded.")
        : null,
      h(
        "dl",
        { class: "facts card" },
        ...fact("Collection", collection),
        ...fact("Size", formatBytes(doc.size_bytes)),
        ...fact("Chunks", String(doc.chunk_count)),
        ...fact("Uploaded", formatDate(doc.created_at)),
        ...fact("Updated", formatDate(doc.updated_at)),
        ...fact("Content type", doc.content_type),
        ...fact("SHA-256", h("code", { class: "hash" }, doc.sha256)),
      ),
      h("h2", { id: "chunks-title" }, "Chunks"),
      chunks.items.length
        ? h(
            "ol",
            { class: "chunks", "aria-labelledby": "chunks-title" },
            chunks.items.map((c) =>
              h(
                "li",
                { class: "chunk card" },
                h(
                  "div",
                  { class: "chunk-head muted small" },
                  h("span", {}, `Chunk ${c.chunk_index}`),
                  c.page !== null && c.page !== undefined ? h("span", {}, `Page ${c.page}`) : null,
                ),
                h("p", { class: "chunk-text" }, c.text),
              ),
            ),
          )
        : h("p", { class: "muted" }, NO_CHUNKS[doc.status] || NO_CHUNKS.queued),
      chunks.total > CHUNK_PAGE ? pager : null,
    );
    announce(`${doc.filename}: ${chunks.total} chunks`);
  }

  load(route.query);
  return {
    update(newRoute) {
      load(newRoute.query);
    },
    unmount() {
      controller?.abort();
    },
  };
}

export function mount(root, ctx, route) {
  let mode = route.id ? "detail" : "list";
  let view = (mode === "detail" ? mountDetail : mountList)(root, ctx, route);
  return {
    update(newRoute) {
      const wanted = newRoute.id ? "detail" : "list";
      if (wanted === mode && (wanted === "list" || newRoute.id === route.id)) {
        view.update(newRoute);
      } else {
        view.unmount();
        clear(root);
        mode = wanted;
        view = (mode === "detail" ? mountDetail : mountList)(root, ctx, newRoute);
      }
      route = newRoute;
    },
    unmount() {
      view.unmount();
    },
  };
}
