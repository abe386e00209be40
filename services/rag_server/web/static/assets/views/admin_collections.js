// The Admin view's collections: the list (documents, fusion weight), a form for a new one, an edit
// dialog (name, description, weight) and delete (a collection's documents go with it, after asking).

import { api, ApiError } from "../api.js";
import { clear, confirmDialog, focusNear, h, rowIndex, showModal, toast } from "../dom.js";

const NAME_HINT = "Lower-case letters, digits, - and _; up to 63";

// The weight field's text -> the API's hybrid_alpha: "" is null (the server's RAG_HYBRID_ALPHA).
function alphaOf(text) {
  const trimmed = text.trim();
  return trimmed === "" ? null : Number(trimmed);
}

function fields(prefix, collection = null) {
  // pattern: the browser says the rule (the title) before anything is sent; the server checks it again.
  const name = h("input", { id: `${prefix}-name`, required: true, maxlength: "63", pattern: "[a-z0-9][a-z0-9_\\-]*", autocomplete: "off", spellcheck: "false", title: NAME_HINT });
  const description = h("input", { id: `${prefix}-description`, maxlength: "2000", autocomplete: "off" });
  const alpha = h("input", { id: `${prefix}-alpha`, type: "number", min: "0", max: "1", step: "0.05", placeholder: "default", inputmode: "decimal" });
  if (collection) {
    name.value = collection.name;
    name.disabled = collection.name === "default"; // `default` keeps its name
    description.value = collection.description;
    alpha.value = collection.hybrid_alpha ?? "";
  }
  const label = (input, text, hint) => h("label", { class: "field", for: input.id }, h("span", { title: hint }, text), input);
  return {
    name,
    description,
    alpha,
    els: [
      label(name, "Name", NAME_HINT),
      label(description, "Description"),
      label(alpha, "Vector weight", "Hybrid search's weight of the vector leg, 0 to 1 (BM25 gets the rest); empty: the server's"),
    ],
  };
}

export function collectionsSection(ctx) {
  const body = h("tbody");
  const error = h("p", { class: "form-error admin-error", role: "alert" });
  const formError = h("p", { class: "form-error admin-error", role: "alert" });
  const created = fields("new-collection");
  const form = h(
    "form",
    { class: "admin-form", "aria-label": "New collection" },
    ...created.els,
    h("button", { type: "submit", class: "primary" }, "Create collection"),
  );
  const el = h(
    "section",
    { class: "admin-section", "aria-labelledby": "collections-title" },
    h("h2", { id: "collections-title", tabindex: "-1" }, "Collections"),
    error,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "admin-table" },
        h("caption", { class: "visually-hidden" }, "Collections"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Name", "Description", "Documents", "Vector weight"].map((t, i) => h("th", { scope: "col", class: i === 2 || i === 3 ? "num" : null }, t)),
            h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
          ),
        ),
        body,
      ),
    ),
    h("h3", {}, "New collection"),
    form,
    formError,
  );

  // The list the top bar's switcher is built from, fetched again: one request shows both (the app's
  // `rag:collections` draws it: admin.js).
  async function load() {
    try {
      await ctx.reloadCollections();
      error.textContent = "";
    } catch (err) {
      error.textContent = err.message;
    }
  }

  function draw() {
    clear(body).append(...ctx.collections.map(row));
  }

  // After any change: this list, the switcher, and whoever listens (the keys' collection choices).
  async function after(message) {
    toast(message);
    await load();
  }

  // The row of `c` went: the focus goes to the Delete of the row in its place (see focusNear).
  async function afterRemoval(c, message, kind) {
    const index = rowIndex(body, c.name);
    toast(message, kind);
    await load();
    if (index >= 0) focusNear(body, index, 'button[aria-label^="Delete "]', el.querySelector("#collections-title"));
  }

  // Deleted meanwhile by another admin (a tab, the CLI): said by its name, and its row goes. The server's
  // 404 named the id ("no collection '9f7d...'") and the row stayed, to be tried again.
  function gone(err, c) {
    if (!(err instanceof ApiError) || err.status !== 404) return false;
    afterRemoval(c, `The collection “${c.name}” was already deleted, in another tab or by another admin.`, "error");
    return true;
  }

  function row(c) {
    const actions = h(
      "div",
      { class: "row-actions" },
      h("button", { type: "button", class: "quiet", "aria-label": `Edit ${c.name}`, onclick: () => edit(c) }, "Edit"),
      c.name === "default"
        ? null
        : h("button", { type: "button", class: "quiet danger-text", "aria-label": `Delete ${c.name}`, onclick: () => remove(c) }, "Delete"),
    );
    return h(
      "tr",
      { "data-name": c.name },
      h("td", { class: "name-cell" }, h("strong", {}, c.name)),
      h("td", { class: "muted" }, c.description || "—"),
      h("td", { class: "num" }, String(c.document_count)),
      h("td", { class: "num" }, c.hybrid_alpha === null ? h("span", { class: "muted" }, "default") : String(c.hybrid_alpha)),
      h("td", {}, actions),
    );
  }

  async function remove(c) {
    const n = c.document_count;
    const question = n
      ? `Delete the collection “${c.name}” and its ${n} document${n === 1 ? "" : "s"} (files, chunks, tasks)? This cannot be undone.`
      : `Delete the empty collection “${c.name}”?`;
    if (!(await confirmDialog(question))) return;
    try {
      await api(`/collections/${encodeURIComponent(c.id)}`, { method: "DELETE", query: n ? { force: "true" } : undefined });
    } catch (err) {
      if (gone(err, c)) return;
      toast(err.message, "error");
      return;
    }
    await afterRemoval(c, `Collection ${c.name} deleted.`);
  }

  function edit(c) {
    const edited = fields("edit-collection", c);
    const dialogError = h("p", { class: "form-error", role: "alert" });
    const dialog = h(
      "dialog",
      { class: "admin-dialog", "aria-labelledby": "edit-collection-title" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: "edit-collection-title" }, `Edit ${c.name}`),
        ...edited.els,
        dialogError,
        h("div", { class: "row end" }, h("button", { type: "button", class: "quiet", onclick: () => dialog.close() }, "Cancel"), h("button", { value: "save", class: "primary" }, "Save")),
      ),
    );
    // Cancel is a plain button, so Enter in a field submits with Save, the form's default button (as the
    // first submit button, Cancel took Enter and threw the edit away); Escape cancels.
    dialog.querySelector("form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const changes = {};
      if (!edited.name.disabled && edited.name.value.trim() !== c.name) changes.name = edited.name.value.trim();
      if (edited.description.value !== c.description) changes.description = edited.description.value;
      const alpha = alphaOf(edited.alpha.value);
      if (alpha !== c.hybrid_alpha) changes.hybrid_alpha = alpha;
      try {
        if (Object.keys(changes).length) await api(`/collections/${encodeURIComponent(c.id)}`, { method: "PATCH", json: changes });
      } catch (err) {
        if (gone(err, c)) {
          dialog.close();
          return;
        }
        dialogError.textContent = err.message;
        return;
      }
      dialog.close();
      if (Object.keys(changes).length) await after(`Collection ${changes.name ?? c.name} saved.`);
    });
    dialog.addEventListener("close", () => dialog.remove());
    showModal(dialog);
    (edited.name.disabled ? edited.description : edited.name).focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const json = { name: created.name.value.trim(), description: created.description.value };
    const alpha = alphaOf(created.alpha.value);
    if (alpha !== null) json.hybrid_alpha = alpha;
    try {
      await api("/collections", { method: "POST", json });
    } catch (err) {
      formError.textContent = err.message;
      return;
    }
    formError.textContent = "";
    form.reset();
    await after(`Collection ${json.name} created.`);
  });

  load();
  return { el, draw };
}
