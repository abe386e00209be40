// One document (#/documents/<id>?page=N&find=T): its details, version and metadata, its failure reason,
// its chunks paged, or only those holding a text (find). An editor can edit the metadata (JSON) and
// replace the file with a new version.

import { api, ApiError } from "../api.js";
import { announce, cutText, formatBytes, h, timeNode, toast } from "../dom.js";
import { href, navigate } from "../router.js";
import { canonical, chunkNumber, chunkPlace, chunkSection, deleteDocument, downloadDocument, fill, GONE, nameParts, statusBadge, typedFilter } from "./document_common.js";
import { metadataSection } from "./document_metadata.js";
import { replaceSection } from "./document_replace.js";
import { lastPageInstead, pageOf, pager } from "./pager.js";

const CHUNK_PAGE = 50;
const FIND_MAX = 1000; // the API's limit on a text of GET /documents/{id}/chunks?text=
// How often a queued or processing document's status is asked again.
const STATUS_POLL_MS = 4000;
const NO_CHUNKS = {
  ready: "This document has no chunks.",
  failed: "No chunks: processing failed.",
  queued: "Chunks appear once processing is finished.",
};

// The text with every occurrence of `found` marked: text nodes and <mark> elements, never markup.
// The chunk's text with each place holding `find` marked, as the server matched it (canonical form).
function marked(text, find) {
  if (!find) return text;
  const found = canonical(find);
  return text.split(found).flatMap((part, i) => (i ? [h("mark", {}, found), part] : [part]));
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

// backHref(): the list the person came from (its filters, sort and page).
export function mountDetail(root, ctx, route, backHref) {
  const id = route.id;
  let controller = null;
  const life = new AbortController(); // the page's: what outlives a redraw ends with the page
  let shownDoc = null;
  let watchTimer = null;
  const page = h("div", { class: "page document-detail" });
  root.append(page);

  let currentQuery = route.query;
  // Kept across redraws (the same element), so typing in it is not interrupted when the page is drawn.
  const findField = typedFilter({
    id: "find-chunks",
    label: "Find in chunks",
    placeholder: "Exact text",
    max: FIND_MAX,
    title: "Only the chunks that hold this exact text (case as written)",
    onPause: (value) => {
      if (value !== findOf(currentQuery)) navigate(chunksHref(1, value), { replace: true });
    },
  });
  const findOf = (query) => cutText((query.get("find") || "").trim(), FIND_MAX);
  const chunksHref = (chunkPage, find) => href("documents", id, { ...(chunkPage > 1 ? { page: chunkPage } : {}), ...(find ? { find } : {}) });
  // Pages over the chunks shown: with a find, its matches.
  const chunkPager = pager(
    { first: "First chunks", previous: "Previous chunks", next: "Next chunks", last: "Last chunks", page: "Page of chunks" },
    (chunkPage) => chunksHref(chunkPage, findOf(currentQuery)),
  );
  // Its task while it (or a new version) is queued or processing: a large file takes minutes to read and
  // embed. Kept across redraws and brought up to date by the status watch, which draws nothing else.
  const progress = h("div", { class: "upload-progress doc-progress", id: "doc-progress" });
  function showProgress(doc) {
    const task = doc.task;
    progress.hidden = !task;
    if (!task) {
      progress.replaceChildren();
      return;
    }
    const what = task.replaces_version ? `Version ${task.replaces_version + 1}: ` : "";
    const count = (n) => n.toLocaleString("en-US");
    if (task.status === "queued") {
      const waiting = task.error
        ? `${what}to be tried again after ${task.failures === 1 ? "a failure" : `${task.failures} failures`}: ${task.error}`
        : `${what}queued, waiting for a worker.`;
      progress.replaceChildren(h("span", { class: "muted" }, waiting));
    } else if (!task.total_chunks) {
      progress.replaceChildren(h("progress", { "aria-label": "Reading the file" }), h("span", { class: "muted" }, `${what}reading the file…`));
    } else {
      progress.replaceChildren(
        h("progress", { max: task.total_chunks, value: task.completed_chunks, "aria-label": "Chunks embedded" }),
        h("span", { class: "muted" }, `${what}${count(task.completed_chunks)} / ${count(task.total_chunks)} chunks embedded`),
      );
    }
  }
  // The id of the control to focus once the page is drawn again after an edit (the whole page is rebuilt,
  // so the focused button is gone); after a change of chunk page the focus goes to the chunks' heading.
  let focusAfter = null;
  let shownChunkPage = null;
  let metadata = null; // the sections kept across redraws
  let replace = null;

  // Redraw after an edit, focus on `target` (an id).
  function reload(target) {
    focusAfter = target;
    load(currentQuery);
  }

  // A document still queued or processing: its status is asked again every few seconds, and the page is
  // drawn again (chunks and all) once it changes; nothing is redrawn meanwhile (a metadata edit stays).
  // Asked of its task's batch, which answers after the document was deleted too (its task failed, its
  // document_id null): a poll of the document itself was then a 404, which the browser logs as an error
  // in the console, and which the page took for a server away and asked again every 4 s, for ever.
  function watch(doc, signal) {
    watchTimer = setTimeout(async () => {
      try {
        if (!doc.task) {
          const now = await api(`/documents/${encodeURIComponent(id)}`, { signal });
          if (now.status !== doc.status || now.version !== doc.version || !now.task !== !doc.task) load(currentQuery);
          else watch(doc, signal);
          return;
        }
        const batch = await api(`/tasks/${encodeURIComponent(doc.task.batch_id)}/status`, { signal });
        const task = batch.tasks.find((t) => t.task_id === doc.task.task_id);
        if (task && !task.document_id) showGone(GONE); // deleted meanwhile: nothing left to ask about
        else if (task?.status === doc.task.status) {
          showProgress({ task });
          watch(doc, signal);
        } else load(currentQuery); // started, finished or failed: the document has changed
      } catch (err) {
        if (err.name === "AbortError") return;
        // A 404: the document is gone (or its batch, with its collection): said, and asked no more.
        if (err instanceof ApiError && err.status === 404) showGone(GONE);
        else watch(doc, signal); // the server may be back next time
      }
    }, STATUS_POLL_MS);
  }

  // The page of a document that is not there (deleted, or in a collection this key cannot read).
  function showGone(reason = "It was deleted, or it is in a collection this key cannot read.") {
    clearTimeout(watchTimer);
    document.title = "Document not found · rag-server";
    fill(page, backLink(), h("h1", {}, "Document not found"), h("p", { class: "form-error", role: "alert" }, reason));
  }

  async function load(query) {
    currentQuery = query;
    clearTimeout(watchTimer);
    controller?.abort();
    controller = new AbortController();
    const chunkPage = pageOf(query, CHUNK_PAGE);
    const offset = (chunkPage - 1) * CHUNK_PAGE;
    const find = findOf(query);
    findField.show(find);
    const chunkQuery = { offset, limit: CHUNK_PAGE, ...(find ? { text: JSON.stringify({ $contains: find }) } : {}) };
    let doc;
    let chunks;
    try {
      [doc, chunks] = await Promise.all([
        api(`/documents/${encodeURIComponent(id)}`, { signal: controller.signal }),
        api(`/documents/${encodeURIComponent(id)}/chunks`, { signal: controller.signal, query: chunkQuery }),
      ]);
    } catch (err) {
      if (err.name === "AbortError") return;
      if (err instanceof ApiError && (err.status === 404 || err.status === 422)) showGone();
      else {
        document.title = "Could not load the document · rag-server";
        fill(page, backLink(), h("h1", {}, "Could not load the document"), h("p", { class: "form-error", role: "alert" }, err.message));
      }
      return;
    }
    // A chunk page past the end (an old link, a shorter new version): the last page instead of "No
    // chunks" under "Chunks 4951–4950 of 500".
    const lastPage = lastPageInstead(chunkPage, CHUNK_PAGE, chunks.total, chunks.items.length);
    if (lastPage) {
      navigate(chunksHref(lastPage, find), { replace: true });
      return;
    }
    // A collection made since the tab loaded its list (a teammate's new one, linked): the list again, so
    // the page names it and selects it (it showed an id, and kept the tab's own selected).
    if (!ctx.collections.some((c) => c.id === doc.collection_id)) {
      try {
        await ctx.reloadCollections();
      } catch {
        /* the server away: the id is shown, as before */
      }
      if (controller.signal.aborted) return;
    }
    shownDoc = doc;
    render(doc, chunks, chunkPage, find, focusAfter);
    focusAfter = null;
    if (doc.status === "queued" || doc.status === "processing" || doc.task) watch(doc, controller.signal);
  }

  function backLink() {
    return h("a", { class: "back", href: backHref() }, "← All documents");
  }

  function render(doc, chunks, chunkPage, find, focusTarget) {
    // The whole page is drawn again: the find field, moved with it, keeps the focus and the caret.
    const input = findField.field.querySelector("input");
    const typing = document.activeElement === input && [input.selectionStart, input.selectionEnd];
    document.title = `${doc.filename} · rag-server`;
    const paged = shownChunkPage !== null && shownChunkPage !== chunkPage;
    shownChunkPage = chunkPage;
    const collection = ctx.collections.find((c) => c.id === doc.collection_id)?.name ?? doc.collection_id;
    ctx.selectCollectionOf(doc.collection_id);
    const canEdit = ctx.can("editor");
    metadata ??= metadataSection(id, canEdit, () => reload("metadata-edit"));
    metadata.show(doc);
    if (canEdit) replace ??= replaceSection(id, () => shownDoc.filename, life.signal, () => reload("replace-input"));
    const actions = h(
      "div",
      { class: "row" },
      // Chat and search limited to this document (and its collection, selected above).
      h("a", { class: "button-link", href: href("chat", null, { doc: doc.id }) }, "Ask about it"),
      h("a", { class: "button-link", href: href("search", null, { doc: doc.id }) }, "Search in it"),
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
    chunkPager.show({ page: chunkPage, per: CHUNK_PAGE, total: chunks.total, count: chunks.items.length, text: find ? "Matches" : "Chunks" });
    const found = `${chunks.total} ${chunks.total === 1 ? "chunk holds" : "chunks hold"} “${find}”`;
    const findBar = doc.chunk_count
      ? h(
          "div",
          { class: "toolbar" },
          findField.field,
          find ? h("span", { class: "muted", id: "find-count" }, found) : null,
          find ? h("a", { href: chunksHref(1, "") }, "Show all chunks") : null,
        )
      : null;
    showProgress(doc);
    fill(page,
      backLink(),
      h("div", { class: "page-head" }, h("h1", { class: "doc-title" }, ...nameParts(doc.filename)), actions),
      h("p", { class: "row" }, statusBadge(doc.status), h("span", { class: "type" }, doc.file_type.toUpperCase())),
      progress,
      doc.status === "failed"
        ? h("div", { class: "callout error", role: "note" }, h("strong", {}, "Processing failed: "), doc.error || "no reason was recorded.")
        : null,
      h(
        "dl",
        { class: "facts card" },
        ...fact("Collection", collection),
        ...fact("Size", formatBytes(doc.size_bytes)),
        ...fact("Chunks", String(doc.chunk_count)),
        ...fact("Version", String(doc.version)),
        ...(doc.replaced_at ? fact("Replaced", timeNode(doc.replaced_at)) : []),
        ...fact("Uploaded", timeNode(doc.created_at)),
        ...fact("Updated", timeNode(doc.updated_at)),
        ...fact("Content type", doc.content_type),
        ...fact("SHA-256", h("code", { class: "hash" }, doc.sha256)),
      ),
      metadata.section,
      canEdit ? replace : null,
      h("h2", { id: "chunks-title", tabindex: "-1" }, "Chunks"),
      findBar,
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
                  h("span", {}, `Chunk ${chunkNumber(c)}`),
                  chunkPlace(c) ? h("span", { class: "chunk-place" }, chunkPlace(c)) : null,
                  chunkSection(c),
                ),
                h("p", { class: "chunk-text" }, marked(c.text, find)),
              ),
            ),
          )
        : h("p", { class: "muted" }, find && doc.chunk_count ? `No chunk holds “${find}” (exact text, case as written).` : NO_CHUNKS[doc.status] || NO_CHUNKS.queued),
      chunks.total > CHUNK_PAGE ? chunkPager.el : null,
    );
    if (typing) {
      input.focus();
      input.setSelectionRange(...typing);
    } else if (focusTarget) document.getElementById(focusTarget)?.focus();
    else if (paged) {
      // Another page of chunks, asked for from the pager at the bottom: its first chunk, not the bottom
      // of the new page, with the focus there (the pager is drawn again below the new chunks).
      const title = document.getElementById("chunks-title");
      title.focus({ preventScroll: true });
      title.scrollIntoView({ block: "start" });
    }
    announce(find ? found : `${doc.filename}: ${chunks.total} chunks`);
  }

  load(route.query);
  return {
    update(newRoute) {
      load(newRoute.query);
    },
    unmount() {
      clearTimeout(watchTimer);
      controller?.abort();
      life.abort();
      findField.destroy();
    },
  };
}
