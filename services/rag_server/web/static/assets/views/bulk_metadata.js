// "Set metadata" for the documents selected in the list: one JSON object merged into (or replacing) each
// one's metadata, in one request and one transaction (POST /documents/metadata; for all the documents
// matching the list's filters, POST /documents/metadata/matching with their selection).

import { api, ApiError, SELECTION_CHANGED } from "../api.js";
import { h, plural, showModal, toast } from "../dom.js";
import { parseJsonObject } from "./document_common.js";

// collection: the name the title shows; collectionId: the one the request names (a rename meanwhile).
// target: {docs} (rows picked) or {matching: the API selection, count: the N confirmed}, with `label` ("3
// documents"). Resolves true once the metadata is set, false when the dialog is closed without it, and
// the ApiError when the API refused "all matching" as no longer holding `count` documents (409
// selection_changed: nothing was set; the dialog closes, the caller says why).
export function setSelectedMetadata(collection, collectionId, target) {
  return new Promise((resolve) => {
    const area = h("textarea", { id: "bulk-metadata-input", rows: 5, spellcheck: "false", placeholder: '{"team": "a"}', "aria-describedby": "bulk-metadata-error" });
    const mode = (value, label, checked) =>
      h("label", { class: "bulk-mode" }, h("input", { type: "radio", name: "bulk-mode", value, checked }), h("span", {}, label));
    const error = h("p", { id: "bulk-metadata-error", class: "form-error", role: "alert" });
    const title = `Set metadata of ${target.label} in the collection ${collection}`;
    const save = h("button", { type: "submit", class: "primary" }, "Set metadata");
    const dialog = h(
      "dialog",
      { class: "form-dialog", "aria-labelledby": "bulk-metadata-title" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: "bulk-metadata-title" }, title),
        h("label", { for: "bulk-metadata-input" }, "Metadata (a JSON object)"),
        area,
        h(
          "fieldset",
          { class: "bulk-modes" },
          h("legend", { class: "visually-hidden" }, "How"),
          mode("merge", "Merge: set these keys on each document (null removes a key)", true),
          mode("replace", "Replace: each document's metadata becomes this object", false),
        ),
        error,
        // Cancel is no submit button: Enter in the form (on a radio) sends it, not Cancel.
        h("div", { class: "row end" }, h("button", { type: "button", class: "quiet", onclick: () => dialog.close() }, "Cancel"), save),
      ),
    );
    let saved = false;
    let refused = null; // the selection_changed ApiError
    let pending = null; // the request under way: Escape waits for it, a closing resolves after it
    dialog.addEventListener("cancel", (event) => {
      if (pending) event.preventDefault();
    });
    dialog.querySelector("form").addEventListener("submit", async (event) => {
      event.preventDefault();
      if (pending) return;
      // An empty box would be {}: with Replace, every selected document's metadata cleared unasked.
      const parsed = area.value.trim() ? parseJsonObject(area.value) : { error: 'Write a JSON object, like {"team": "a"}.' };
      if (parsed.error) {
        error.textContent = parsed.error;
        area.setAttribute("aria-invalid", "true");
        area.focus();
        return;
      }
      area.removeAttribute("aria-invalid");
      const how = dialog.querySelector("input[name=bulk-mode]:checked").value;
      let result;
      save.disabled = true;
      pending = target.matching
        ? api("/documents/metadata/matching", {
            method: "POST",
            json: { collection: collectionId, ...target.matching, expected_count: target.count, mode: how, set: parsed.value },
          })
        : api("/documents/metadata", {
            method: "POST",
            json: { collection: collectionId, mode: how, documents: target.docs.map((d) => ({ id: d.id, metadata: parsed.value })) },
          });
      try {
        result = await pending;
      } catch (err) {
        if (err instanceof ApiError && err.code === SELECTION_CHANGED) {
          refused = err;
          pending = null;
          dialog.close();
          return;
        }
        // Every document gets the same object: which one the server names first says nothing here.
        error.textContent = err.message.replace(/documents\[\d+\]\.metadata|^set\b/, "Metadata");
        return;
      } finally {
        pending = null;
        save.disabled = false;
      }
      const gone = result.not_updated.length ? `; ${plural(result.not_updated.length, "was", "were")} gone meanwhile` : "";
      toast(`Metadata set on ${plural(result.updated.length, "document", "documents")}${gone}`);
      saved = true;
      dialog.close();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      // Closed by a navigation while the request was under way: say whether it was saved once it is known.
      if (pending) pending.then(() => resolve(true), (err) => resolve(err.code === SELECTION_CHANGED ? err : false));
      else resolve(refused ?? saved);
    });
    showModal(dialog);
    area.focus();
  });
}
