// What the documents table, a document's page, search hits and chat sources share: the status badge,
// download, delete, and where a chunk sits in its file.

import { api, ApiError, download, parseJson } from "../api.js";
import { append, clear, confirmDialog, h, toast } from "../dom.js";

const STATUS_TONE = { ready: "ok", failed: "error", queued: "", processing: "warn" };

// Every file type the server stores (documents.file_type; parsing.FILE_TYPES), for the type filters of
// the documents list and of search. tests/unit/test_web_static.py keeps it equal to the server's.
export const FILE_TYPES = ["pdf", "docx", "pptx", "xlsx", "txt", "md", "html", "csv", "json"];

// A document's name as shown: its folders ("setup/", a document named by its path in the folder uploaded)
// muted before the file's own name.
export function nameParts(filename) {
  const cut = filename.lastIndexOf("/") + 1;
  return cut ? [h("span", { class: "doc-folder" }, filename.slice(0, cut)), filename.slice(cut)] : [filename];
}

// Replace el's children; null children (optional parts) are left out.
export function fill(el, ...children) {
  return append(clear(el), children);
}

// Where a chunk (a search hit, a chat source) sits in its file, as a labelled fact: a slide or sheet
// rows when the server says so (["Location", "slide 3"]), else the page (["Page", "4"]); null when the
// file has neither (Markdown, text, HTML).
export function chunkPlaceFact(chunk) {
  if (chunk.location?.label) return ["Location", chunk.location.label];
  return chunk.page !== null && chunk.page !== undefined ? ["Page", String(chunk.page)] : null;
}

// The same in running text: "slide 3", "page 4", or null.
export function chunkPlace(chunk) {
  const fact = chunkPlaceFact(chunk);
  if (!fact) return null;
  return fact[0] === "Page" ? `page ${fact[1]}` : fact[1];
}

// Text in the form the server stores and searches it (text.canonical): composed (NFC), Latin ligatures
// spelled out, so what a user typed or pasted (from macOS, from a PDF) marks what the server found.
const LIGATURES = { "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st" };
export function canonical(text) {
  return text.normalize("NFC").replace(/[\ufb00-\ufb06]/gu, (ligature) => LIGATURES[ligature]);
}

// A chunk as people count it: the first is "Chunk 1", as the pager's first page is page 1 (the API's
// chunk_index counts from 0).
export function chunkNumber(chunk) {
  return chunk.chunk_index + 1;
}

// The headings above a chunk ("Guide > Install", a slide's title, a sheet's name), or null.
export function chunkSection(chunk, className = "chunk-section") {
  return chunk.heading_path ? h("span", { class: className, title: chunk.heading_path }, chunk.heading_path) : null;
}

// Metadata typed by hand (a document's, a filter's): {value} for a JSON object ("" is {}), else {error}.
export function parseJsonObject(text) {
  let value;
  try {
    value = parseJson(text.trim() || "{}");
  } catch (err) {
    return { error: `Not valid JSON: ${err.message}` };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { error: 'Metadata must be a JSON object, like {"team": "x"}.' };
  }
  if (hasHugeNumber(value)) return { error: "A number is too large (like 1e400): it would be stored as null." };
  return { value };
}

// 1e400 parses as Infinity, which JSON.stringify writes as null.
function hasHugeNumber(value) {
  if (typeof value === "number") return !Number.isFinite(value);
  if (value === null || typeof value !== "object" || JSON.isRawJSON?.(value)) return false;
  return Object.values(value).some(hasHugeNumber);
}

export function statusBadge(status) {
  return h("span", { class: `badge ${STATUS_TONE[status] ?? ""}` }, status);
}

// A document deleted meanwhile (in another tab, by someone else) is a 404 naming its id: say it is gone.
export const GONE = "This document no longer exists: it was deleted, perhaps in another tab.";

export function documentError(err) {
  return err instanceof ApiError && err.status === 404 ? GONE : err.message;
}

// False only when the server says the document is gone (404): a search within it, or a chat about it,
// that found nothing says so instead of "try other words".
export async function documentExists(id) {
  try {
    await api(`/documents/${encodeURIComponent(id)}`);
    return true;
  } catch (err) {
    return !(err instanceof ApiError && (err.status === 404 || err.status === 422));
  }
}

export async function downloadDocument(doc) {
  try {
    await download(`/documents/${doc.id}/download`, doc.filename);
  } catch (err) {
    toast(`Download failed: ${documentError(err)}`, "error");
  }
}

export async function deleteDocument(doc) {
  const ok = await confirmDialog(
    `Delete “${doc.filename}”? Its chunks leave search and chat at once. This cannot be undone.`,
    "Delete",
  );
  if (!ok) return false;
  try {
    await api(`/documents/${doc.id}`, { method: "DELETE" });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      toast(`${doc.filename} was already deleted, perhaps in another tab`);
      return true; // gone either way: the list drops it
    }
    toast(`Not deleted: ${err.message}`, "error");
    return false;
  }
  toast(`Deleted ${doc.filename}`);
  return true;
}

// Typing in a filter asks the server once the typing pauses, not at every key.
const TYPING_PAUSE_MS = 300;

// A text filter applied once typing pauses: onPause(the trimmed text).
export function typedFilter({ id, label, placeholder, max, title, onPause }) {
  const input = h("input", { id, type: "search", placeholder, title, maxlength: String(max), autocomplete: "off", spellcheck: "false" });
  let pause = null;
  input.addEventListener("input", () => {
    clearTimeout(pause);
    pause = setTimeout(() => onPause(input.value.trim()), TYPING_PAUSE_MS);
  });
  return {
    field: h("label", { class: `field ${id}`, for: id }, h("span", {}, label), input),
    // Not while the same text is being typed (spaces at its ends, the caret): only when the URL changed it.
    show(value) {
      if (input.value.trim() !== value) input.value = value;
    },
    destroy() {
      clearTimeout(pause);
    },
  };
}
