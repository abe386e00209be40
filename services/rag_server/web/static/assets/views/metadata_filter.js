// The metadata filter of the documents list and of search: a JSON object typed by hand, matched as the API
// matches it (GET /documents?metadata=, POST /search filters.metadata). Checked here as JSON only; what
// the server refuses beyond that (a nested object, a key too long) comes back as its 422 sentence.

import { h } from "../dom.js";
import { parseJsonObject } from "./document_common.js";

export const METADATA_MAX = 4000; // the API's limit on GET /documents?metadata=
const EXAMPLE = '{"year": 2020, "tags": "rust"}';
const CHECK_MS = 300;

// "" or {} -> no filter (text ""); a JSON object -> {value, text: its compact JSON}; else a sentence.
export function parseMetadata(raw) {
  const { value, error } = parseJsonObject(raw);
  if (error) return { ok: false, message: error.endsWith(".") ? error : `${error}. Write a JSON object, like ${EXAMPLE}.` };
  if (!Object.keys(value).length) return { ok: true, value: null, text: "" };
  return { ok: true, value, text: JSON.stringify(value) };
}

// The field and its note (placed by the view under its row of filters). onValid(text) runs once typing
// pauses on a valid filter ("" when cleared); an invalid one is marked and explained, never sent.
export function metadataFilter(id, onValid = () => {}) {
  const noteId = `${id}-note`;
  const input = h("input", {
    id,
    type: "text",
    class: "metadata-input",
    placeholder: '{"key": "value"}',
    maxlength: String(METADATA_MAX),
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": noteId,
    title: `JSON: every key must match, e.g. ${EXAMPLE}`,
  });
  const note = h("p", { id: noteId, class: "metadata-note", "aria-live": "polite" });
  const field = h("label", { class: "field metadata-filter", for: id }, h("span", {}, "Metadata"), input);

  function check() {
    const result = parseMetadata(input.value);
    if (result.ok) input.removeAttribute("aria-invalid");
    else input.setAttribute("aria-invalid", "true");
    note.textContent = result.ok ? "" : result.message;
    note.hidden = result.ok;
    return result;
  }

  // The filter last applied (from the URL, or typed and valid): a new URL overwrites what is being typed
  // only when it brings another filter.
  let applied = "";
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const result = check();
      if (!result.ok) return;
      applied = result.text;
      onValid(result.text);
    }, CHECK_MS);
  });
  note.hidden = true;

  return {
    field,
    note,
    input,
    check,
    show(text) {
      if (text === applied) return;
      applied = text;
      input.value = text;
      check();
    },
    destroy() {
      clearTimeout(timer);
    },
  };
}
