// Documents of the selected collection: the table (sort, filters, paging, all in the URL: document_query.js;
// its rows: document_row.js), and the upload panel for editors; #/documents/<id> is document_detail.js.

import { api, ApiError } from "../api.js";
import { clear, h } from "../dom.js";
import { href, navigate } from "../router.js";
import { deleteDocument, FILE_TYPES, fill, typedFilter } from "./document_common.js";
import { mountDetail } from "./document_detail.js";
import { COLUMNS, CONTAINS_MAX, isFiltered, listHref, listParams, NAME_MAX, NO_FILTERS, PAGE_SIZES, STATUSES } from "./document_query.js";
import { documentRow } from "./document_row.js";
import { lastPageInstead, pager } from "./pager.js";
import { documentSelection } from "./document_selection.js";
import { metadataFilter } from "./metadata_filter.js";
import { uploadPanel } from "./upload_panel.js";

const REFRESH_MS = 4000;
// The list's query last shown, so "back to documents" from a document returns to the same page.
let lastListQuery = "";

const accessibleName = (el) => el.getAttribute("aria-label") || el.textContent;

function select(id, label, options, onchange) {
  return h(
    "label",
    { class: "field", for: id },
    h("span", {}, label),
    h("select", { id, onchange: (e) => onchange(e.target.value) }, options.map(([v, text]) => h("option", { value: v }, text))),
  );
}

function mountList(root, ctx, route) {
  let params = listParams(route.query);
  let controller = null;
  let timer = null;
  const canEdit = ctx.can("editor");

  const tableBody = h("tbody");
  const heading = h("h1", { tabindex: "-1" }, "Documents");
  const headRow = h("tr");
  const table = h(
    "table",
    { class: "documents-table" },
    h("caption", { class: "visually-hidden" }, `Documents in ${ctx.collection}`),
    h("thead", {}, headRow),
    tableBody,
  );
  const filters = h("div", { class: "toolbar" });
  // Applied once typing pauses on valid JSON; replace: one history entry per filter typed, as for the name.
  const metadata = metadataFilter("filter-metadata", (meta) => {
    if (meta !== params.meta) navigate(listHref(params, { meta, page: 1 }), { replace: true });
  });
  const empty = h("div", { class: "empty", hidden: true });
  const error = h("p", { class: "form-error", role: "alert" });
  const wrap = h("div", { class: "table-wrap" }, table);
  const paging = pager(
    { first: "First page", previous: "Previous page", next: "Next page", last: "Last page", page: "Page number" },
    (page) => listHref(params, { page }),
  );

  // Editors select rows of the page shown, or every document matching the filters, and delete them or
  // set their metadata together (document_selection.js).
  const picks = canEdit ? documentSelection({ collection: ctx.collection, collectionId: ctx.collectionId, tableBody, focusAfter: heading, onDone: () => load() }) : null;

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
        h("div", {}, heading, h("p", { class: "muted small" }, `Collection ${ctx.collection}`)),
        uploadButton,
      ),
      panel?.el,
      filters,
      metadata.note,
      picks?.bar,
      error,
      wrap,
      empty,
      paging.el,
    ),
  );

  // Built once and kept in sync with the URL, so a control keeps the keyboard focus after it is used.
  const statusSelect = select("filter-status", "Status", [["", "All statuses"], ...STATUSES.map((v) => [v, v])], (v) =>
    navigate(listHref(params, { status: v, page: 1 })),
  );
  const typeSelect = select("filter-type", "Type", [["", "All types"], ...FILE_TYPES.map((t) => [t, t.toUpperCase()])], (v) =>
    navigate(listHref(params, { type: v, page: 1 })),
  );
  const perSelect = select("page-size", "Per page", PAGE_SIZES.map((n) => [String(n), String(n)]), (v) =>
    navigate(listHref(params, { per: Number(v), page: 1 })),
  );
  // replace: one history entry for a filter being typed, not one per pause.
  const typed = (key) => (value) => {
    if (value !== params[key]) navigate(listHref(params, { [key]: value, page: 1 }), { replace: true });
  };
  const nameFilter = typedFilter({ id: "filter-name", label: "Name", placeholder: "Part of a name", max: NAME_MAX, onPause: typed("name") });
  const containsFilter = typedFilter({
    id: "filter-contains",
    label: "Contains",
    placeholder: "Words in the text",
    max: CONTAINS_MAX,
    title: "Documents whose text holds these exact words (case as written)",
    onPause: typed("has"),
  });
  const clearFilters = h("a", { class: "clear-filters" }, "Clear filters");
  filters.append(nameFilter.field, containsFilter.field, metadata.field, statusSelect, typeSelect, perSelect, clearFilters);
  if (canEdit) headRow.append(h("th", { scope: "col", class: "pick" }, picks.selectAll));
  const headers = COLUMNS.map((col) => {
    const mark = h("span", { class: "sort-mark", "aria-hidden": "true" });
    const button = h("button", { type: "button", class: "sort" }, col.label, mark);
    button.addEventListener("click", () => {
      const order = params.sort === col.key ? (params.order === "asc" ? "desc" : "asc") : col.first;
      navigate(listHref(params, { sort: col.key, order, page: 1 }));
    });
    const th = h("th", { scope: "col", class: col.numeric ? "num" : null }, button);
    headRow.append(th);
    return { col, th, mark };
  });
  headRow.append(h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")));

  function renderControls() {
    statusSelect.querySelector("select").value = params.status;
    typeSelect.querySelector("select").value = params.type;
    perSelect.querySelector("select").value = String(params.per);
    nameFilter.show(params.name);
    containsFilter.show(params.has);
    metadata.show(params.meta);
    clearFilters.hidden = !isFiltered(params);
    clearFilters.setAttribute("href", listHref(params, NO_FILTERS));
    for (const { col, th, mark } of headers) {
      const active = params.sort === col.key;
      th.setAttribute("aria-sort", active ? (params.order === "asc" ? "ascending" : "descending") : "none");
      mark.textContent = active ? (params.order === "asc" ? "▲" : "▼") : "";
    }
  }

  // After a delete the focus goes to the row now in the deleted one's place (else the one above, else the
  // heading), not to the top of the page with the removed row.
  let focusRow = null;
  async function onDelete(doc) {
    if (!(await deleteDocument(doc))) return;
    focusRow = [...tableBody.children].findIndex((tr) => tr.dataset.id === doc.id);
    // The last row of a page gone: show the page before.
    if (tableBody.children.length === 1 && params.page > 1) navigate(listHref(params, { page: params.page - 1 }));
    else load();
  }

  function renderEmpty(total) {
    const filtered = isFiltered(params);
    empty.hidden = total > 0;
    wrap.hidden = total === 0;
    if (total > 0) return;
    fill(empty,
      h("p", { class: "empty-title" }, filtered ? "No document matches these filters." : "No documents in this collection yet."),
      filtered
        ? h("a", { href: listHref(params, NO_FILTERS) }, "Clear filters")
        : h("p", { class: "muted" }, canEdit ? "Upload files to search them and chat about them." : "An editor can upload files here."),
    );
  }

  // The query of the rows on show: rows of another one must not stay under the filters now in the URL.
  let shownQuery = null;
  function dropRows() {
    clear(tableBody);
    picks?.clear();
    paging.el.hidden = true;
    wrap.hidden = true;
    empty.hidden = true;
    shownQuery = null;
  }

  async function load() {
    controller?.abort();
    controller = new AbortController();
    clearTimeout(timer);
    wrap.setAttribute("aria-busy", "true");
    const query = {
      collection: ctx.collection,
      limit: params.per,
      offset: (params.page - 1) * params.per,
      sort: params.sort,
      order: params.order,
      status: params.status,
      type: params.type,
      name: params.name,
      text: params.has ? JSON.stringify({ $contains: params.has }) : "",
      metadata: params.meta,
    };
    let data;
    try {
      data = await api("/documents", { signal: controller.signal, query });
    } catch (err) {
      if (err.name === "AbortError") return;
      error.textContent = err.message;
      wrap.removeAttribute("aria-busy");
      // The server gone or failing: the list comes back by itself once it answers again. A refusal (a
      // bad filter: 422) is not retried. Either way, rows of an earlier query do not stay on show (they
      // read as this one's matches, still selected for a delete).
      if (shownQuery !== JSON.stringify(query)) dropRows();
      if (!(err instanceof ApiError) || err.status === 0 || err.status >= 500) timer = setTimeout(load, REFRESH_MS);
      return;
    }
    // Listed by name, acted on by the id the view opened with: documents of another collection under that
    // name (renamed, and a new one made under its old name) are not shown as this view's. The tab follows
    // its collection, as after a 404.
    if (ctx.collectionId && data.items.some((doc) => doc.collection_id !== ctx.collectionId)) {
      wrap.removeAttribute("aria-busy");
      dropRows();
      window.dispatchEvent(new CustomEvent("rag:collection-missing"));
      return;
    }
    shownQuery = JSON.stringify(query);
    // A page past the end (an old link, the last documents deleted meanwhile): the last page instead of
    // an empty table under "4901–4900 of 4".
    const lastPage = lastPageInstead(params.page, params.per, data.total, data.items.length);
    if (lastPage) {
      navigate(listHref(params, { page: lastPage }), { replace: true });
      return;
    }
    error.textContent = "";
    wrap.removeAttribute("aria-busy");
    // The rows are rebuilt (every 4 s while documents are processed): the focused link or button is put
    // back on its row's new one, else keyboard focus fell to the top of the page at each refresh.
    const active = tableBody.contains(document.activeElement) ? document.activeElement : null;
    const focused = active && { id: active.closest("tr").dataset.id, name: accessibleName(active) };
    picks?.shown(data.items, data.total, params);
    clear(tableBody).append(...data.items.map((doc) => documentRow(doc, canEdit ? onDelete : null, picks?.rowSelection)));
    picks?.render();
    if (focused) {
      const row = [...tableBody.children].find((tr) => tr.dataset.id === focused.id);
      [...(row?.querySelectorAll("a, button, input") ?? [])].find((el) => accessibleName(el) === focused.name)?.focus();
    }
    paging.show({ page: params.page, per: params.per, total: data.total, count: data.items.length });
    paging.el.hidden = !data.total;
    renderEmpty(data.total);
    if (focusRow !== null) {
      const links = tableBody.querySelectorAll("td.name-cell a");
      (links[Math.min(focusRow, links.length - 1)] || heading).focus();
      focusRow = null;
    }
    // Documents still being processed: keep their status and chunk counts current.
    if (data.items.some((d) => d.status === "queued" || d.status === "processing")) {
      timer = setTimeout(load, REFRESH_MS);
    }
  }

  renderControls();
  load();
  lastListQuery = listHref(params, {});
  document.title = "Documents · rag-server";

  return {
    update(newRoute) {
      params = listParams(newRoute.query);
      lastListQuery = listHref(params, {});
      picks?.filtersChanged(params);
      renderControls();
      load();
    },
    unmount() {
      controller?.abort();
      clearTimeout(timer);
      nameFilter.destroy();
      containsFilter.destroy();
      metadata.destroy();
      panel?.destroy();
    },
  };
}

const backToList = () => lastListQuery || href("documents");

function mountMode(mode, root, ctx, route) {
  return mode === "detail" ? mountDetail(root, ctx, route, backToList) : mountList(root, ctx, route);
}

export function mount(root, ctx, route) {
  let mode = route.id ? "detail" : "list";
  let view = mountMode(mode, root, ctx, route);
  return {
    update(newRoute) {
      const wanted = newRoute.id ? "detail" : "list";
      if (wanted === mode && (wanted === "list" || newRoute.id === route.id)) {
        view.update(newRoute);
      } else {
        view.unmount();
        clear(root);
        mode = wanted;
        view = mountMode(mode, root, ctx, newRoute);
      }
      route = newRoute;
    },
    unmount() {
      view.unmount();
    },
  };
}
