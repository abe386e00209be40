// The Documents list's selection (editors): rows of the page shown, or, Gmail-style, every document
// matching the list's filters ("Select all M matching"), then deleted or given metadata together. All
// matching acts through the API's selection (POST /documents/delete, /documents/metadata/matching: the
// same metadata and text match the list sends GET /documents), never by sending ids; it is offered only
// for filters that selection expresses exactly (no name, status or type filter), so it never acts on
// another set than the list shows. It sends the N the user confirmed ("Select all N matching") as
// `expected_count`: should the selection hold another number by then (documents uploaded, edited or
// deleted meanwhile), the API changes nothing (409 selection_changed), and the page says so, lets go of
// "all matching" and shows the list again.

import { api, ApiError, SELECTION_CHANGED } from "../api.js";
import { confirmDialog, h, plural, toast } from "../dom.js";
import { setSelectedMetadata } from "./bulk_metadata.js";

// The API selection naming exactly the documents the list's filters show, else null (a name, status or
// type filter, which it cannot say; no filter at all, which it refuses: a whole collection).
export function matchingSelection(params) {
  if (params.status || params.type || params.name) return null;
  const selection = {};
  if (params.meta) {
    let meta;
    try {
      meta = JSON.parse(params.meta);
    } catch {
      return null;
    }
    if (!meta || typeof meta !== "object" || Array.isArray(meta) || !Object.keys(meta).length) return null;
    selection.metadata = meta;
  }
  if (params.has) selection.text = { $contains: params.has };
  return Object.keys(selection).length ? selection : null;
}

// collection: the name shown; collectionId: the collection the actions name (by id: one renamed since the
// list opened, and another given its name meanwhile, was the one acted on). tableBody: the rows
// (checkboxes in td.pick); onDone(): the list to load again; focusAfter: where the focus goes after a delete.
export function documentSelection({ collection, collectionId, tableBody, focusAfter, onDone }) {
  const selected = new Map(); // id -> document
  const shown = new Map(); // the page's documents by id, which the select-all box picks from
  let page = { total: 0, selection: null }; // the list's total and its API selection (null: none)
  let allMatching = false;
  let confirmed = 0; // with allMatching: the N of the "Select all N matching" clicked

  const selectAll = h("input", { type: "checkbox", "aria-label": "Select every document on this page" });
  const selectedCount = h("span", { "aria-live": "polite" });
  const editSelected = h("button", { type: "button" }, "Set metadata");
  const deleteSelected = h("button", { type: "button", class: "danger" }, "Delete selected");
  const clearSelection = h("button", { type: "button", class: "quiet" }, "Clear selection");
  const offerText = h("span", {});
  const offerButton = h("button", { type: "button", class: "link" });
  const offer = h("p", { class: "select-matching", hidden: true }, offerText, " ", offerButton);
  const bar = h(
    "div",
    { class: "bulk-bar-wrap" },
    h("div", { class: "bulk-bar", hidden: true }, selectedCount, editSelected, deleteSelected, clearSelection),
    offer,
  );

  const rowSelection = {
    has: (id) => allMatching || selected.has(id),
    toggle(doc, on) {
      if (allMatching) {
        // One row unticked: the page's rows but that one, as ticking them by hand would leave.
        allMatching = false;
        selected.clear();
        for (const d of shown.values()) selected.set(d.id, d);
      }
      if (on) selected.set(doc.id, doc);
      else selected.delete(doc.id);
      render();
    },
  };

  function render() {
    const boxes = [...tableBody.querySelectorAll("td.pick input")];
    for (const box of boxes) box.checked = rowSelection.has(box.closest("tr").dataset.id);
    const whole = boxes.length > 0 && (allMatching || selected.size === boxes.length);
    selectAll.checked = whole;
    selectAll.indeterminate = !allMatching && selected.size > 0 && selected.size < boxes.length;
    const count = allMatching ? confirmed : selected.size;
    bar.firstChild.hidden = count === 0;
    selectedCount.textContent = allMatching
      ? `All ${plural(count, "document", "documents")} matching selected`
      : `${plural(count, "document", "documents")} selected`;
    // Every row of the page ticked and more documents match: all of them, where the filters allow it.
    const more = whole && page.total > boxes.length && page.selection !== null;
    offer.hidden = !more;
    if (!more) return;
    if (allMatching) {
      offerText.textContent = `All ${confirmed} matching documents are selected.`;
      offerButton.textContent = "Clear selection";
    } else {
      offerText.textContent = `All ${boxes.length} on this page are selected.`;
      offerButton.textContent = `Select all ${page.total} matching`;
    }
  }

  function set(docs) {
    allMatching = false;
    selected.clear();
    for (const doc of docs) selected.set(doc.id, doc);
    render();
  }

  // What an action names: the rows' ids, or the filters' selection with the count the user confirmed.
  const target = () =>
    allMatching
      ? { matching: page.selection, count: confirmed, label: `all ${plural(confirmed, "document", "documents")} matching these filters` }
      : { docs: [...selected.values()], count: selected.size, label: plural(selected.size, "document", "documents") };

  // An "all matching" action refused as its selection no longer holds the N confirmed: the server's
  // sentence, "all matching" let go, the list shown again.
  const changed = (err) => err instanceof ApiError && err.code === SELECTION_CHANGED;
  function selectionChanged(what, err) {
    toast(`${what} failed: ${err.message}`, "error");
    set([]);
    focusAfter.focus(); // the bar, and the button pressed, are hidden now
    onDone();
  }

  async function deleteTarget() {
    const t = target();
    const ok = await confirmDialog(
      `Delete ${t.label} in the collection ${collection}? Their chunks leave search and chat at once. This cannot be undone.`,
      "Delete",
    );
    if (!ok) return;
    const body = t.matching
      ? { collection: collectionId, ...t.matching, expected_count: t.count }
      : { collection: collectionId, ids: t.docs.map((d) => d.id) };
    try {
      const result = await api("/documents/delete", { method: "POST", json: body });
      const gone = result.not_deleted.length ? `; ${plural(result.not_deleted.length, "was", "were")} already gone` : "";
      toast(`Deleted ${plural(result.deleted.length, "document", "documents")}${gone}`);
    } catch (err) {
      if (changed(err)) selectionChanged("Delete", err);
      else toast(`Delete failed: ${err.message}`, "error");
      return;
    }
    set([]);
    focusAfter.focus();
    onDone();
  }

  selectAll.addEventListener("change", () => {
    const rows = [...tableBody.querySelectorAll("tr")];
    set(selectAll.checked ? rows.map((tr) => shown.get(tr.dataset.id)).filter(Boolean) : []);
  });
  offerButton.addEventListener("click", () => {
    if (allMatching) set([]);
    else {
      allMatching = true;
      confirmed = page.total;
      render();
    }
    offerButton.focus();
  });
  deleteSelected.addEventListener("click", deleteTarget);
  // The selection stays: the rows' new metadata may be what the next step (a delete, a filter) uses.
  editSelected.addEventListener("click", async () => {
    const outcome = await setSelectedMetadata(collection, collectionId, target());
    if (changed(outcome)) {
      selectionChanged("Set metadata", outcome);
      return;
    }
    if (outcome) onDone();
    editSelected.focus();
  });
  clearSelection.addEventListener("click", () => set([]));

  return {
    selectAll,
    bar,
    rowSelection,
    // A page arrived: its documents, the list's total and its filters' API selection.
    shown(docs, total, params) {
      shown.clear();
      for (const doc of docs) shown.set(doc.id, doc);
      const selection = matchingSelection(params);
      // Other filters, or none that the API can say: "all matching" no longer names what is shown.
      if (JSON.stringify(selection) !== JSON.stringify(page.selection)) allMatching = false;
      page = { total, selection };
      // A selection holds only rows still shown (another page, a filter, a delete elsewhere drop theirs).
      for (const id of [...selected.keys()]) if (!shown.has(id)) selected.delete(id);
      if (!docs.length) allMatching = false;
    },
    render,
    // The filters changed: until their page arrives, "all matching" would name the old ones' documents.
    filtersChanged(params) {
      if (allMatching && JSON.stringify(matchingSelection(params)) !== JSON.stringify(page.selection)) set([]);
    },
    clear() {
      shown.clear();
      page = { total: 0, selection: null };
      set([]);
    },
  };
}
