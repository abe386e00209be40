// "Set metadata" for the documents selected in the list: one JSON object merged into (or replacing) each
// one's metadata, in one request and one transaction (POST /documents/metadata).

import { api } from "../api.js";
import { h, showModal, toast } from "../dom.js";
import { parseJsonObject } from "./document_common.js";

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

// Resolves true once the metadata is set, false when the dialog is closed without it.
export function setSelectedMetadata(collection, docs) {
  return new Promise((resolve) => {
    const area = h("textarea", { id: "bulk-metadata-input", rows: 5, spellcheck: "false", placeholder: '{"team": "a"}', "aria-describedby": "bulk-metadata-error" });
    const mode = (value, label, checked) =>
      h("label", { class: "bulk-mode" }, h("input", { type: "radio", name: "bulk-mode", value, checked }), h("span", {}, label));
    const error = h("p", { id: "bulk-metadata-error", class: "form-error", role: "alert" });
    const title = `Set metadata of ${plural(docs.length, "document", "documents")}`;
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
        h("div", { class: "row end" }, h("button", { value: "cancel", class: "quiet", formnovalidate: true }, "Cancel"), h("button", { value: "save", class: "primary" }, "Set metadata")),
      ),
    );
    let saved = false;
    dialog.querySelector("form").addEventListener("submit", async (event) => {
      if (event.submitter?.value !== "save") return;
      event.preventDefault();
      const parsed = parseJsonObject(area.value);
      if (parsed.error) {
        error.textContent = parsed.error;
        area.setAttribute("aria-invalid", "true");
        area.focus();
        return;
      }
      area.removeAttribute("aria-invalid");
      const how = dialog.querySelector("input[name=bulk-mode]:checked").value;
      let result;
      try {
        result = await api("/documents/metadata", {
          method: "POST",
          json: { collection, mode: how, documents: docs.map((d) => ({ id: d.id, metadata: parsed.value })) },
        });
      } catch (err) {
        // Every document gets the same object: which one the server names first says nothing here.
        error.textContent = err.message.replace(/documents\[\d+\]\.metadata/, "Metadata");
        return;
      }
      const gone = result.not_updated.length ? `; ${plural(result.not_updated.length, "was", "were")} gone meanwhile` : "";
      toast(`Metadata set on ${plural(result.updated.length, "document", "documents")}${gone}`);
      saved = true;
      dialog.close();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(saved);
    });
    showModal(dialog);
    area.focus();
  });
}
