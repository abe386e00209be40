// A document's metadata on its page: shown to everyone, edited as JSON by an editor.

import { api, ApiError, DOCUMENT_BUSY } from "../api.js";
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
  let current = null; // the metadata last shown
  // What the editor was opened on: the server saves only over that (expected_metadata), so an edit made
  // meanwhile by someone else (another tab, the API, the CLI) is never thrown away without a word. After a
  // 409: the metadata then shown, which the person was told of and chooses to replace by saving again.
  let openedWith = null;
  function toggle(editing) {
    form.hidden = !editing;
    shown.hidden = editing;
    edit.hidden = editing;
    error.textContent = "";
    // Focus goes where the person is now: into the editor, or back on the button that opened it (not
    // left on a hidden Cancel, from where Tab starts over at the top of the page).
    if (editing) openedWith = current;
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
    // Disabled while sent, the button loses the focus (to the page's body): it gets it back when the
    // save fails, so Enter saves again (the 409's "Save again") without the mouse.
    const refocus = document.activeElement === save;
    save.disabled = true;
    const url = `/documents/${encodeURIComponent(id)}`;
    try {
      const json = openedWith === null ? { metadata: parsed.value } : { metadata: parsed.value, expected_metadata: openedWith };
      await api(url, { method: "PATCH", json });
      toast("Metadata saved");
      toggle(false);
      onSaved();
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && err.code !== DOCUMENT_BUSY && openedWith !== null) {
        try {
          const now = await api(url);
          // The next Save replaces what is shown now, and only that: an edit made after this message
          // is a 409 again. Unless what is stored reads here as what was expected (a value JSON cannot
          // carry to the server as it is stored): then the next Save replaces it without the check.
          openedWith = JSON.stringify(now.metadata) === JSON.stringify(openedWith) ? null : now.metadata;
          show(now);
          error.textContent = `This metadata was changed since you opened the editor; it is now ${shown.textContent}. Save again to replace it with yours.`;
        } catch (again) {
          error.textContent = documentError(again);
        }
      } else error.textContent = documentError(err);
    } finally {
      save.disabled = false;
      if (refocus && !form.hidden && document.activeElement === document.body) save.focus();
    }
  });
  const section = h("section", { "aria-labelledby": "metadata-title" }, title, shown, edit, form);
  function show(doc) {
    current = doc.metadata;
    shown.textContent = JSON.stringify(doc.metadata, null, 2);
    if (form.hidden) area.value = shown.textContent; // not while an edit is open
  }
  return { section, show };
}
