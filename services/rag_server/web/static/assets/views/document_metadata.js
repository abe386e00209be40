// A document's metadata on its page: shown to everyone, edited as JSON by an editor.

import { api } from "../api.js";
import { h, toast } from "../dom.js";
import { documentError, parseJsonObject } from "./document_common.js";

const METADATA_LIMIT = 16 * 1024;

// The textarea's JSON as an object, or a sentence saying what is wrong with it.
function parseMetadata(text) {
  const parsed = parseJsonObject(text);
  if (parsed.value && new TextEncoder().encode(JSON.stringify(parsed.value)).length > METADATA_LIMIT) {
    return { error: "Metadata is over the limit of 16 KiB." };
  }
  return parsed;
}

// Metadata: shown to everyone; an editor edits it as JSON (PATCH replaces it whole). onSaved() redraws
// the page, with the keyboard focus back on "Edit metadata". Made once per page and kept across redraws
// (`show` puts a newer document's metadata in): an edit being typed survives a redraw (the document's
// processing ending, a find in its chunks).
export function metadataSection(id, canEdit, onSaved) {
  const shown = h("pre", { class: "metadata-json card", role: "figure", "aria-label": "Current metadata" });
  const title = h("h2", { id: "metadata-title" }, "Metadata");
  if (!canEdit) {
    const section = h("section", { "aria-labelledby": "metadata-title" }, title, shown);
    return { section, show: (doc) => (shown.textContent = JSON.stringify(doc.metadata, null, 2)) };
  }
  const area = h("textarea", { id: "metadata-input", rows: 6, spellcheck: "false", "aria-describedby": "metadata-error" });
  const error = h("p", { id: "metadata-error", class: "form-error", role: "alert" });
  const save = h("button", { type: "submit" }, "Save metadata");
  const form = h(
    "form",
    { class: "metadata-form", hidden: true },
    h("label", { for: "metadata-input" }, "Metadata (a JSON object; it replaces the current metadata)"),
    area,
    error,
    h("div", { class: "row" }, save, h("button", { type: "button", class: "quiet", onclick: () => toggle(false) }, "Cancel")),
  );
  const edit = h("button", { type: "button", id: "metadata-edit", onclick: () => toggle(true) }, "Edit metadata");
  let openedWith = null; // the metadata shown when the editor opened, as shown
  function toggle(editing) {
    form.hidden = !editing;
    shown.hidden = editing;
    edit.hidden = editing;
    error.textContent = "";
    // Focus goes where the person is now: into the editor, or back on the button that opened it (not
    // left on a hidden Cancel, from where Tab starts over at the top of the page).
    if (editing) openedWith = shown.textContent;
    if (editing) area.focus();
    else edit.focus();
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const parsed = parseMetadata(area.value);
    if (parsed.error) {
      error.textContent = parsed.error;
      return;
    }
    save.disabled = true;
    try {
      // Changed by someone else since the editor opened (another tab, the API, the CLI): saving would throw
      // their edit away without a word. Said, with the metadata now stored; a second Save replaces it.
      const now = JSON.stringify((await api(`/documents/${encodeURIComponent(id)}`)).metadata, null, 2);
      if (now !== openedWith) {
        openedWith = now;
        shown.textContent = now;
        error.textContent = `This metadata was changed since you opened the editor; it is now ${now}. Save again to replace it with yours.`;
        return;
      }
      await api(`/documents/${encodeURIComponent(id)}`, { method: "PATCH", json: { metadata: parsed.value } });
      toast("Metadata saved");
      toggle(false);
      onSaved();
    } catch (err) {
      error.textContent = documentError(err);
    } finally {
      save.disabled = false;
    }
  });
  const section = h("section", { "aria-labelledby": "metadata-title" }, title, shown, edit, form);
  function show(doc) {
    shown.textContent = JSON.stringify(doc.metadata, null, 2);
    if (form.hidden) area.value = shown.textContent; // not while an edit is open
  }
  return { section, show };
}
