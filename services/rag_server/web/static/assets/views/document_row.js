// A row of the Documents list: its name (a link to its page, its error when it failed), type, status,
// chunks, size, upload time, Download and, for editors, Delete and its selection checkbox.

import { formatBytes, h, timeNode } from "../dom.js";
import { href } from "../router.js";
import { downloadDocument, nameParts, statusBadge } from "./document_common.js";

// One row; onDelete(doc) and `selection` ({has(id), toggle(doc, on)}: the row's checkbox) only for editors.
export function documentRow(doc, onDelete, selection) {
  const actions = h(
    "div",
    { class: "row-actions" },
    h("button", { type: "button", class: "quiet", "aria-label": `Download ${doc.filename}`, onclick: () => downloadDocument(doc) }, "Download"),
    onDelete
      ? h(
          "button",
          {
            type: "button",
            class: "quiet danger-text",
            "aria-label": `Delete ${doc.filename}`,
            onclick: () => onDelete(doc),
          },
          "Delete",
        )
      : null,
  );
  const pick = selection
    ? h(
        "td",
        { class: "pick" },
        h("input", {
          type: "checkbox",
          checked: selection.has(doc.id),
          "aria-label": `Select ${doc.filename}`,
          onchange: (e) => selection.toggle(doc, e.target.checked),
        }),
      )
    : null;
  return h(
    "tr",
    { dataset: { id: doc.id, status: doc.status } },
    pick,
    h(
      "td",
      { class: "name-cell" },
      h("a", { href: href("documents", doc.id), title: `${doc.filename}: details and chunks` }, ...nameParts(doc.filename)),
      doc.status === "failed" && doc.error ? h("p", { class: "row-error" }, doc.error) : null,
    ),
    h("td", {}, h("span", { class: "type" }, doc.file_type.toUpperCase())),
    h("td", {}, statusBadge(doc.status)),
    h("td", { class: "num" }, String(doc.chunk_count)),
    h("td", { class: "num" }, formatBytes(doc.size_bytes)),
    h("td", { class: "nowrap" }, timeNode(doc.created_at)),
    h("td", {}, actions),
  );
}
