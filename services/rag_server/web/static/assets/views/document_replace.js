// A document's "Replace the file" section (its page, document_detail.js): the new file sent, then its task
// followed until the new version is in.

import { api } from "../api.js";
import { h, toast } from "../dom.js";
import { documentError } from "./document_common.js";

// Replace the file: PUT /documents/{id}/file, then follow the task until the new version is in. Made
// once per page and kept across redraws, with `signal` the page's own (not a redraw's): a find in the
// chunks while the new version is processed left the progress line and the new version unshown.
export function replaceSection(id, nameOf, signal, onDone) {
  const input = h("input", { type: "file", id: "replace-input", "aria-describedby": "replace-status" });
  const status = h("p", { id: "replace-status", class: "muted", role: "status" });
  const button = h("button", { type: "submit" }, "Replace file");
  const form = h(
    "form",
    { class: "replace-form row" },
    h("label", { for: "replace-input" }, "New version of the file"),
    input,
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = input.files?.[0];
    if (!file) {
      status.textContent = "Choose a file first.";
      return;
    }
    const body = new FormData();
    body.append("file", file);
    button.disabled = true;
    try {
      const batch = await api(`/documents/${encodeURIComponent(id)}/file`, { method: "PUT", body, signal });
      const task = batch.tasks[0];
      if (task.status === "duplicate") {
        status.textContent = task.detail || "Nothing to replace.";
        return;
      }
      status.textContent = `Processing version ${task.replaces_version + 1}; version ${task.replaces_version} stays searchable until it is ready.`;
      const done = await followBatch(batch.batch_id, signal);
      if (done.tasks[0].status === "failed") {
        status.textContent = `The new file failed, version ${task.replaces_version} stays: ${done.tasks[0].error}`;
        return;
      }
      status.textContent = "";
      toast(`${nameOf()}: version ${task.replaces_version + 1} is in`);
      onDone();
    } catch (err) {
      if (err.name !== "AbortError") status.textContent = documentError(err);
    } finally {
      button.disabled = false;
    }
  });
  return h("section", { "aria-labelledby": "replace-title" }, h("h2", { id: "replace-title" }, "Replace the file"), form, status);
}

async function followBatch(batchId, signal) {
  for (;;) {
    const batch = await api(`/tasks/${encodeURIComponent(batchId)}/status`, { signal });
    if (batch.done) return batch;
    await new Promise((resolve) => setTimeout(resolve, 700));
  }
}
