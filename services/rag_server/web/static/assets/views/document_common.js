// What the documents table and a document's page share: the status badge, download, delete.

import { api, download } from "../api.js";
import { append, clear, confirmDialog, h, toast } from "../dom.js";

const STATUS_TONE = { ready: "ok", failed: "error", queued: "", processing: "warn" };

// Replace el's children; null children (optional parts) are left out.
export function fill(el, ...children) {
  return append(clear(el), children);
}

export function statusBadge(status) {
  return h("span", { class: `badge ${STATUS_TONE[status] ?? ""}` }, status);
}

export async function downloadDocument(doc) {
  try {
    await download(`/documents/${doc.id}/download`, doc.filename);
  } catch (err) {
    toast(`Download failed: ${err.message}`, "error");
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
    toast(`Not deleted: ${err.message}`, "error");
    return false;
  }
  toast(`Deleted ${doc.filename}`);
  return true;
}
