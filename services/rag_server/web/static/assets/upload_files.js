// The files of an upload, without any DOM: those picked (an <input type=file>, a folder) or dropped (folders
// walked), each with its path, the name of its document; and their SHA-256, computed in the browser.

// crypto.subtle exists only in secure contexts (https, localhost); on a plain-http LAN address the
// server's own dedup still catches duplicates.
export function canHash() {
  return Boolean(globalThis.isSecureContext && globalThis.crypto?.subtle);
}

export async function sha256Hex(file) {
  const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// A file's path is the name of its document: the file's own name, or its path inside the folder picked or
// dropped ("setup/README.md"; the folder's own name left out, as `rag-server ingest FOLDER` does), so one
// file name in two sub-folders makes two documents.

// [{file, path}] from a drop: folders are walked (webkitGetAsEntry). The entries must be taken before the
// first await: the DataTransfer is emptied once the event handler returns.
export async function filesFromDrop(dataTransfer) {
  const items = Array.from(dataTransfer.items || []).filter((i) => i.kind === "file");
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  if (!entries.length || entries.some((e) => !e)) {
    return Array.from(dataTransfer.files || [], (file) => ({ file, path: file.name }));
  }
  const found = [];
  for (const entry of entries) await walk(entry, found, entry.isDirectory ? `${entry.fullPath}/` : "/");
  return found;
}

async function walk(entry, found, root) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    found.push({ file, path: entry.fullPath.slice(root.length) });
    return;
  }
  if (!entry.isDirectory) return;
  const reader = entry.createReader();
  // readEntries answers in pages (100 in Chromium) until an empty one.
  for (;;) {
    const page = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!page.length) break;
    // Hidden files (.DS_Store, .git) are never what a person means by "this folder".
    for (const child of page) if (!child.name.startsWith(".")) await walk(child, found, root);
  }
}

// [{file, path}] from an <input type=file>. A file picked by itself is kept even when hidden (it was
// meant); inside a picked folder hidden ones are left out.
export function filesFromInput(input) {
  const picked = [];
  for (const file of input.files || []) {
    // With webkitdirectory: the picked folder's name, then the path inside it.
    const inside = (file.webkitRelativePath || "").split("/").slice(1);
    if (!inside.length) picked.push({ file, path: file.name });
    else if (!inside.some((part) => part.startsWith("."))) picked.push({ file, path: inside.join("/") });
  }
  return picked;
}
