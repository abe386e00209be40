// The upload panel of the Documents view (editors and admins): a drop zone that takes files and folders,
// file and folder pickers, and one row per file from checking to searchable. The work itself is upload.js.

import { clear, formatBytes, h, announce } from "../dom.js";
import { href } from "../router.js";
import { nameParts } from "./document_common.js";
import { FINAL, tracker, uploadLimits } from "../upload.js";
import { filesFromDrop, filesFromInput } from "../upload_files.js";

const BADGE = {
  waiting: ["", "waiting"],
  hashing: ["", "checking"],
  sending: ["warn", "uploading"],
  refused: ["error", "refused"],
  unsent: ["error", "not sent"],
  queued: ["", "queued"],
  processing: ["warn", "processing"],
  completed: ["ok", "completed"],
  failed: ["error", "failed"],
  duplicate: ["", "duplicate"],
};

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function docLink(row, text) {
  return row.documentId ? h("a", { href: href("documents", row.documentId) }, text) : text;
}

function detail(row) {
  switch (row.status) {
    case "hashing":
      return h("span", { class: "muted" }, "Checking whether it is already stored…");
    case "sending":
      return h("progress", { "aria-label": `Uploading ${row.name}` });
    case "refused":
    case "unsent":
    case "failed":
      return h("span", { class: "upload-error" }, row.error || "Failed.");
    case "processing": {
      const total = row.totalChunks || 0;
      if (!total) return h("progress", { "aria-label": `Processing ${row.name}` });
      return h(
        "span",
        { class: "upload-progress" },
        h("progress", { max: total, value: row.completedChunks || 0, "aria-label": `Processing ${row.name}` }),
        h("span", { class: "muted" }, `${row.completedChunks || 0} / ${total} chunks`),
      );
    }
    case "completed":
      if (row.replacesVersion) {
        return docLink(row, `${plural(row.totalChunks ?? 0, "chunk")} · version ${row.replacesVersion + 1} · view`);
      }
      if (!row.namesakeId) return docLink(row, `${plural(row.totalChunks ?? 0, "chunk")} · view`);
      // A changed file of a stored name is a second document: say so, and where a new version is made.
      // Of a bare name (stored before names had folders), replacing by name would not find it.
      return h(
        "span",
        {},
        docLink(row, `${plural(row.totalChunks ?? 0, "chunk")} · view`),
        " · added beside ",
        h(
          "a",
          { href: href("documents", row.namesakeId), class: "namesake" },
          row.namesakeBare ? `the document named “${row.namesakeBare}”` : "the document of this name",
        ),
        row.namesakeBare
          ? " (stored before documents were named by their folder; Replace file there makes a new version instead)"
          : " (Replace file there, or upload with “Replace documents of the same name”, makes a new version instead)",
      );
    case "duplicate":
      return docLink(row, row.existingName ? `Already stored as ${row.existingName}` : "Already stored · view");
    default:
      return null;
  }
}

function rowElement(row) {
  const [tone, label] = BADGE[row.status] || ["", row.status];
  return h(
    "li",
    { class: `upload-row status-${row.status}`, dataset: { status: row.status } },
    h(
      "div",
      { class: "upload-name" },
      // A long name is cut with an ellipsis: the whole of it on hover.
      h("span", { class: "name", title: row.name }, ...nameParts(row.name)),
      row.size !== null && row.size !== undefined ? h("span", { class: "muted small" }, formatBytes(row.size)) : null,
    ),
    h("span", { class: `badge ${tone}` }, label),
    h("div", { class: "upload-detail" }, detail(row)),
  );
}

const signature = (row) =>
  [row.status, row.completedChunks, row.totalChunks, row.error, row.documentId, row.existingName, row.replacesVersion].join("|");

function summaryText(rows) {
  const count = (s) => rows.filter((r) => r.status === s).length;
  const finished = rows.filter((r) => FINAL.has(r.status)).length;
  const parts = [`${finished} of ${rows.length} finished`];
  for (const s of ["completed", "duplicate", "failed", "refused"]) if (count(s)) parts.push(`${count(s)} ${s}`);
  if (count("unsent")) parts.push(`${count("unsent")} not sent`);
  return parts.join(" · ");
}

// {el, open(), close(), isOpen(), destroy()}; onSettled() when a document finished (refresh the table).
export function uploadPanel(ctx, { onSettled, onToggle }) {
  const uploads = tracker(ctx.collectionId);
  const fileInput = h("input", { type: "file", multiple: true, id: "upload-files", class: "visually-hidden" });
  const folderInput = h("input", { type: "file", id: "upload-folder", class: "visually-hidden", webkitdirectory: true });
  const list = h("ol", { class: "upload-list", "aria-label": "Uploads" });
  const summary = h("span", { class: "muted small", "aria-live": "polite" });
  const warningList = h("ul");
  // Always there (empty when there is nothing to say): a status region shown with its text already in it
  // is often not read out.
  const warnings = h("div", { class: "upload-warnings", role: "status", "aria-label": "Upload warnings" }, warningList);
  let warned = "";
  const clearButton = h("button", { type: "button", class: "quiet", onclick: () => uploads.clearFinished() }, "Clear finished");
  const resendButton = h("button", { type: "button", onclick: () => uploads.resend() }, "Send again");
  // Off by default: a changed file of a stored name is added beside it, and the row links that one.
  const replaceBox = h("input", { type: "checkbox", id: "upload-replace" });
  const zone = h(
    "div",
    { class: "dropzone" },
    h("p", { class: "dropzone-title" }, "Drop files or folders here"),
    h(
      "p",
      { class: "row dropzone-pick" },
      fileInput,
      h("label", { for: "upload-files", class: "button-like" }, "Select files to upload"),
      folderInput,
      h("label", { for: "upload-folder", class: "button-like" }, "Select a folder to upload"),
    ),
    h(
      "p",
      { class: "row upload-replace" },
      replaceBox,
      h(
        "label",
        { for: "upload-replace" },
        "Replace documents of the same name",
        h("span", { class: "muted small" }, " · a changed file becomes a new version of the stored one, not a second document"),
      ),
    ),
    h(
      "p",
      { class: "muted small" },
      `PDF, Word (.docx), PowerPoint (.pptx), Excel (.xlsx), text, Markdown, HTML, CSV and JSON · up to ${formatBytes(uploadLimits(ctx.status).max_file_bytes)} per file. ` +
        "Files already in this collection are skipped.",
    ),
  );
  const el = h(
    "section",
    { class: "card upload-panel", id: "upload-panel", "aria-labelledby": "upload-title", hidden: true },
    h(
      "div",
      { class: "row upload-head" },
      h("h2", { id: "upload-title" }, `Upload to ${ctx.collection}`),
      h("button", { type: "button", class: "quiet", "aria-label": "Close the upload panel", onclick: () => close() }, "Close"),
    ),
    zone,
    h("div", { class: "row upload-summary" }, summary, resendButton, clearButton),
    warnings,
    list,
  );

  async function add(picked) {
    if (!picked.length) return;
    announce(`${picked.length} file${picked.length === 1 ? "" : "s"} added to the uploads`);
    await uploads.add(picked, uploadLimits(ctx.status), { replace: replaceBox.checked });
  }

  fileInput.addEventListener("change", () => {
    const picked = filesFromInput(fileInput);
    fileInput.value = "";
    add(picked);
  });
  folderInput.addEventListener("change", () => {
    const picked = filesFromInput(folderInput);
    folderInput.value = "";
    add(picked);
  });
  // Files dropped anywhere on the page come here while the panel exists (app.js has the one handler):
  // the drop zone is where to aim, not the only place that takes them.
  const dropTarget = {
    over: (event) => zone.classList.toggle("over", zone.contains(event.target)),
    async drop(dataTransfer) {
      zone.classList.remove("over");
      open();
      add(await filesFromDrop(dataTransfer));
    },
  };
  ctx.dropTarget = dropTarget;
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));

  const shown = new Map(); // row id -> {sig, li}
  function render() {
    const rows = [...uploads.rows.values()];
    for (const [id, item] of shown) {
      if (!uploads.rows.has(id)) {
        item.li.remove();
        shown.delete(id);
      }
    }
    let previous = null;
    for (const row of rows) {
      const sig = signature(row);
      let item = shown.get(row.id);
      if (!item || item.sig !== sig) {
        const li = rowElement(row);
        if (item) item.li.replaceWith(li);
        item = { sig, li };
        shown.set(row.id, item);
      }
      // Keep the list in the tracker's order.
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (expected !== item.li) list.insertBefore(item.li, expected);
      previous = item.li;
    }
    summary.textContent = rows.length ? summaryText(rows) : "Nothing uploaded yet.";
    // Drawn again only when they change: a status region announces what is put in it.
    if (uploads.warnings.join("\n") !== warned) {
      warned = uploads.warnings.join("\n");
      clear(warningList).append(...uploads.warnings.map((text) => h("li", {}, text)));
    }
    clearButton.hidden = !rows.some((r) => FINAL.has(r.status)) && !uploads.warnings.length;
    resendButton.hidden = !rows.some((r) => r.status === "unsent");
    if (rows.length && el.hidden) open();
  }

  function open() {
    el.hidden = false;
    onToggle?.(true);
  }
  function close() {
    el.hidden = true;
    onToggle?.(false);
  }

  const unsubscribe = uploads.subscribe((event) => {
    if (event === "change") render();
    else if (event === "settled") onSettled?.();
  });
  render();

  return {
    el,
    open,
    close,
    isOpen: () => !el.hidden,
    focus: () => fileInput.focus(),
    destroy() {
      if (ctx.dropTarget === dropTarget) ctx.dropTarget = null;
      unsubscribe();
      clear(list);
    },
  };
}
