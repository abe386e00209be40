// The Admin view's "Edit access" dialog of one API key: its role and the collections it reaches, changed in
// place (PATCH /keys/{name}): the key itself stays the same, nobody has to be handed a new one. What the
// server refuses (the last admin key demoted, an admin with collections, a collection deleted meanwhile)
// stays in the dialog in the server's words.

import { api, ApiError, COLLECTION_NOT_FOUND } from "../api.js";
import { h, showModal } from "../dom.js";

export const ROLES = [
  ["reader", "reader (search, chat, read)"],
  ["editor", "editor (+ upload, edit, delete)"],
  ["admin", "admin (+ collections, keys)"],
];

// Resolves the key as the server answered it once saved, or null when the dialog is closed without saving.
// `mine`: the key this tab is signed in with (leaving admin, this tab loses the Admin page).
export function editKeyAccess(key, ctx, mine) {
  return new Promise((resolve) => {
    let saved = null;
    const role = h("select", { id: "edit-key-role" }, ROLES.map(([value, text]) => h("option", { value, selected: value === key.role }, text)));
    const reached = new Set(key.collections ?? []);
    // By id: a box stays its collection's if another admin renames it while the dialog is open.
    const picks = ctx.collections.map((c) =>
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "collections", value: c.name, dataset: { id: c.id }, checked: reached.has(c.name) }), h("span", {}, c.name)),
    );
    const reachesAll = key.role === "admin" || key.collections === null;
    const now = reachesAll ? "Now: every collection." : `Now: ${key.collections.join(", ") || "none (deleted)"}.`;
    const every = h("input", { type: "checkbox", id: "edit-key-every", checked: reachesAll });
    const list = h("div", { class: "key-collections" }, picks);
    const scope = h(
      "fieldset",
      { class: "key-scope" },
      h("legend", {}, "Collections"),
      h("p", { class: "muted small" }, `${now} Ticked: the ones it reaches from its next request (an admin key reaches every one).`),
      h("label", { class: "check", for: every.id }, every, h("span", {}, "Every collection, new ones too")),
      list,
    );
    const sync = () => {
      scope.disabled = role.value === "admin";
      for (const label of picks) label.querySelector("input").disabled = every.checked;
    };
    sync();
    role.addEventListener("change", sync);
    every.addEventListener("change", sync);
    const dialogError = h("p", { class: "form-error", role: "alert" });
    const warning = mine ? h("p", { class: "muted small" }, "It is the key this tab is signed in with: without the admin role, this tab loses the Admin page.") : null;
    const dialog = h(
      "dialog",
      { class: "admin-dialog", "aria-labelledby": "edit-key-title" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: "edit-key-title" }, `Access of ${key.name}`),
        warning,
        h("label", { class: "field", for: role.id }, h("span", {}, "Role"), role),
        scope,
        dialogError,
        h("div", { class: "row end" }, h("button", { type: "button", class: "quiet", onclick: () => dialog.close() }, "Cancel"), h("button", { value: "save", class: "primary" }, "Save")),
      ),
    );
    // Cancel is a plain button, so Enter submits with Save (as the collection dialog); Escape cancels.
    dialog.querySelector("form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const json = { role: role.value };
      const ticked = picks.map((label) => label.querySelector("input")).filter((input) => input.checked);
      // null: every collection. None ticked is sent as it is, and the server says why it is refused.
      if (role.value !== "admin") json.collections = every.checked ? null : ticked.map((input) => input.dataset.id);
      try {
        saved = await api(`/keys/${encodeURIComponent(key.name)}`, { method: "PATCH", json });
      } catch (err) {
        dialogError.textContent = err.message;
        // A collection deleted meanwhile: the list fetched again, so the next try offers what exists.
        if (err instanceof ApiError && err.code === COLLECTION_NOT_FOUND) ctx.reloadCollections().catch(() => {});
        return;
      }
      dialog.close();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(saved);
    });
    showModal(dialog);
    role.focus();
  });
}
