// One document (#/documents/<id>?page=N): its details, its failure reason, its chunks paged.

import { api, ApiError } from "../api.js";
import { announce, formatBytes, formatDate, h } from "../dom.js";
import { href, navigate } from "../router.js";
import { deleteDocument, downloadDocument, fill, statusBadge } from "./document_common.js";

const CHUNK_PAGE = 50;
const NO_CHUNKS = {
  ready: "This document has no chunks.",
  failed: "No chunks: processing failed.",
  queued: "Chunks appear once processing is finished.",
};

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

// backHref(): the list the person came from (its filters, sort and page).
export function mountDetail(root, ctx, route, backHref) {
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
    return h("a", { class: "back", href: backHref() }, "← All documents");
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
                if (await deleteDocument(doc)) navigate(backHref());
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
