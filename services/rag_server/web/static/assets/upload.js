// Uploads, without any DOM: files (upload_files.js: picked or dropped, hashed) -> /documents/check-duplicates
// -> POST /upload in batches the server accepts -> /tasks/{batch}/status polled until each batch is done.
//
// One Tracker per collection lives as long as the tab: a view subscribes to it while shown. Polling runs
// only while someone watches; the active batch ids are kept in sessionStorage, so after a reload, or after
// navigating away and back, polling resumes where it was.

import { api, ApiError, upload as postForm } from "./api.js";
import { canHash, sha256Hex } from "./upload_files.js";

const POLL_FIRST_MS = 500;
const POLL_MAX_MS = 5000;
// Smaller batches than the server's limit: the first files become searchable sooner, and a refused batch
// (413/415) costs less to split.
const BATCH_FILES = 100;
// Headroom for the multipart framing around each file.
const PART_OVERHEAD = 1024;
const CHECK_CHUNK = 1000;
const DEFAULT_LIMITS = {
  max_files_per_upload: 1000,
  max_file_bytes: 50 * 1024 * 1024,
  max_request_bytes: 512 * 1024 * 1024,
};
// A row's status after which nothing about it changes any more.
export const FINAL = new Set(["completed", "failed", "duplicate", "refused"]);

const storageKey = (collectionId) => `rag.uploads.${collectionId}`;

function mb(n) {
  return `${(n / (1024 * 1024)).toFixed(1)} MB`;
}

// A file over the server's limit, in MB, or in bytes when MB shows the two sizes equal ("50.0 MB, over
// the limit of 50.0 MB" for one byte too many), as the server says it.
export function tooLarge(name, size, limit) {
  const bytes = (n) => `${n.toLocaleString("en-US")} bytes`;
  const [over, most] = mb(size) === mb(limit) ? [bytes(size), bytes(limit)] : [mb(size), mb(limit)];
  return `${name} is ${over}, over the limit of ${most} per file.`;
}

// Groups of rows the server takes in one POST: count and bytes under its limits.
export function planBatches(rows, limits) {
  const maxFiles = Math.max(1, Math.min(BATCH_FILES, limits.max_files_per_upload));
  const maxBytes = limits.max_request_bytes;
  const batches = [];
  let batch = [];
  let bytes = 0;
  for (const row of rows) {
    const size = row.size + PART_OVERHEAD;
    if (batch.length && (batch.length >= maxFiles || bytes + size > maxBytes)) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(row);
    bytes += size;
  }
  if (batch.length) batches.push(batch);
  return batches;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

let nextRowId = 1;

// The uploads of one collection. A row: {id, name, size, status, error, documentId, existingName,
// namesakeId, namesakeBare, replace, replacesVersion, totalChunks, completedChunks, taskId}; status is one of waiting, hashing, sending, refused (by the
// server before storing anything), unsent (the server could not be reached: the file can be sent again),
// or a task status (queued, processing, completed, failed, duplicate).
export class Tracker {
  constructor(collectionId) {
    this.collectionId = collectionId; // the API takes a collection's id wherever it takes its name
    this.rows = new Map(); // id -> row, in the order files were added
    this.byTask = new Map(); // task id -> row
    this.listeners = new Set();
    this.watch = null; // AbortController while someone watches
    this.polling = new Map(); // batch id -> the signal of its running poll loop
    // The server's sentences about what it took but may not be what was meant (a name given by several
    // files of one request: documents that share it), until "Clear finished".
    this.warnings = [];
  }

  get batchIds() {
    try {
      return JSON.parse(sessionStorage.getItem(storageKey(this.collectionId)) || "[]");
    } catch {
      return [];
    }
  }

  set batchIds(ids) {
    if (ids.length) sessionStorage.setItem(storageKey(this.collectionId), JSON.stringify(ids));
    else sessionStorage.removeItem(storageKey(this.collectionId));
  }

  // fn(event): "change" (rows changed) or "settled" (documents were stored or finished: the table may
  // refresh).
  subscribe(fn) {
    this.listeners.add(fn);
    if (!this.watch) {
      this.watch = new AbortController();
      for (const id of this.batchIds) this.poll(id);
    }
    return () => {
      this.listeners.delete(fn);
      if (!this.listeners.size && this.watch) {
        this.watch.abort();
        this.watch = null;
      }
    };
  }

  emit(event) {
    for (const fn of this.listeners) fn(event);
  }

  clearFinished() {
    this.warnings = [];
    for (const [id, row] of this.rows) {
      if (FINAL.has(row.status)) {
        this.rows.delete(id);
        if (row.taskId) this.byTask.delete(row.taskId);
      }
    }
    this.emit("change");
  }

  // Hash, skip what is already stored, send the rest in batches; resolves when every batch is sent.
  // `replace`: a file named like a stored document of the collection is a new version of it (the API's
  // replace=true), not a second document beside it.
  async add(picked, limits = DEFAULT_LIMITS, { replace = false } = {}) {
    this.limits = limits;
    const rows = picked.map(({ file, path }) => {
      const row = { id: `f${nextRowId++}`, name: path || file.name, size: file.size, file, status: "waiting", replace };
      this.rows.set(row.id, row);
      return row;
    });
    this.emit("change");
    // Refused here as the server would refuse them, which would refuse the rest of their batch too.
    const count = new Map();
    for (const row of rows) count.set(row.name, (count.get(row.name) || 0) + 1);
    for (const row of rows) {
      if (replace && count.get(row.name) > 1) {
        // Two folders dropped together, each with a README.md: which one replaces the document?
        this.update(row, {
          status: "refused",
          error: `${row.name} is the name of ${count.get(row.name)} files added together: each name says which document it replaces. Add those folders one at a time.`,
        });
      } else if (row.size === 0) {
        this.update(row, { status: "refused", error: `${row.name} is empty (0 bytes): there is nothing in it to read.` });
      } else if (row.size > limits.max_file_bytes) {
        this.update(row, {
          status: "refused",
          error: tooLarge(row.name, row.size, limits.max_file_bytes),
        });
      }
    }
    let pending = rows.filter((r) => r.status === "waiting");
    if (canHash()) pending = await this.skipDuplicates(pending);
    for (const batch of planBatches(pending, limits)) await this.send(batch);
  }

  // The files that never reached the server (status "unsent"), sent again.
  async resend() {
    const rows = [...this.rows.values()].filter((r) => r.status === "unsent");
    for (const row of rows) this.update(row, { status: "waiting", error: null });
    for (const replace of [false, true]) {
      const some = rows.filter((r) => r.replace === replace);
      for (const batch of planBatches(some, this.limits || DEFAULT_LIMITS)) await this.send(batch);
    }
  }

  update(row, fields) {
    Object.assign(row, fields);
    if (FINAL.has(row.status)) row.file = null; // the bytes are not needed any more
    this.emit("change");
  }

  async skipDuplicates(rows) {
    const digests = new Map();
    for (const row of rows) {
      this.update(row, { status: "hashing" });
      try {
        digests.set(row, await sha256Hex(row.file));
      } catch {
        /* unreadable here (a file removed meanwhile): the upload will say so */
      }
    }
    const known = new Map();
    // row -> {id, bare} of a stored document of its name (other bytes); bare: the name it has, when that
    // is only the file's own name (stored before documents were named by their path)
    const namesake = new Map();
    const hashed = rows.filter((r) => digests.has(r));
    try {
      for (let i = 0; i < hashed.length; i += CHECK_CHUNK) {
        const part = hashed.slice(i, i + CHECK_CHUNK);
        const files = part.map((r) => ({ filename: r.name.slice(-1000), sha256: digests.get(r) }));
        const { results } = await api("/documents/check-duplicates", {
          method: "POST",
          json: { files, collection: this.collectionId },
        });
        results.forEach((result, j) => {
          if (result.duplicate) known.set(result.sha256, result);
          else if (result.same_name?.length) namesake.set(part[j], { id: result.same_name[0].id, bare: null });
          else if (result.bare_name?.length) {
            namesake.set(part[j], { id: result.bare_name[0].id, bare: part[j].name.split("/").pop() });
          }
        });
      }
    } catch {
      /* the check only saves bandwidth: the server dedups on upload anyway */
    }
    const rest = [];
    for (const row of rows) {
      const dup = known.get(digests.get(row));
      if (dup) {
        this.update(row, { status: "duplicate", documentId: dup.document_id, existingName: dup.existing_filename });
      } else {
        const stored = namesake.get(row);
        this.update(row, { status: "waiting", namesakeId: stored?.id ?? null, namesakeBare: stored?.bare ?? null });
        rest.push(row);
      }
    }
    return rest;
  }

  // One POST (its rows all replace, or none). A 409/413/415 refuses the whole request for one file's
  // sake (409: a replacement the server refuses): split it until the refused files stand alone, each
  // with the server's sentence, and the others go through.
  async send(batch) {
    for (const row of batch) this.update(row, { status: "sending" });
    const form = new FormData();
    form.append("collection", this.collectionId);
    if (batch[0].replace) form.append("replace", "true");
    for (const row of batch) form.append("files", row.file, row.name);
    let response;
    try {
      response = await postForm("/upload", form);
    } catch (err) {
      const splittable = err instanceof ApiError && [409, 413, 415].includes(err.status);
      if (splittable && batch.length > 1) {
        const half = Math.ceil(batch.length / 2);
        await this.send(batch.slice(0, half));
        await this.send(batch.slice(half));
        return;
      }
      // Unreachable, or a gateway or outage (5xx): nothing says the server kept the files, and its
      // dedup makes sending them again safe. The bytes stay in the tab for "Send again".
      const unsent = !(err instanceof ApiError) || err.status === 0 || err.status >= 500;
      for (const row of batch) {
        this.update(row, unsent ? { status: "unsent", error: `Not sent: ${err.message}` } : { status: "refused", error: err.message });
      }
      return;
    }
    response.tasks.forEach((task, i) => {
      const row = batch[i];
      row.taskId = task.task_id;
      row.batchId = response.batch_id;
      this.byTask.set(task.task_id, row);
      // A task failed at once (a failed document's bytes while a new file for it waits) is not polled:
      // its reason comes with the answer.
      const error = task.status === "failed" ? task.detail : row.error;
      this.update(row, { status: task.status, documentId: task.document_id, replacesVersion: task.replaces_version, error });
    });
    if (response.warnings?.length) {
      this.warnings = [...this.warnings, ...response.warnings];
      this.emit("change");
    }
    // A duplicate too: its batch follows the document it copies while that one runs, and says if it fails.
    if (response.tasks.some((t) => !FINAL.has(t.status) || t.status === "duplicate")) {
      this.batchIds = [...this.batchIds, response.batch_id];
      if (this.watch) this.poll(response.batch_id);
    }
    // The documents exist now (queued): the table shows them at once.
    this.emit("settled");
  }

  // Rows from one /tasks/{batch}/status answer; true when something changed.
  apply(status, batchId) {
    let changed = false;
    let settled = false;
    for (const task of status.tasks) {
      let row = this.byTask.get(task.task_id);
      if (!row) {
        // A batch resumed after a reload: its rows come from the server.
        row = { id: task.task_id, name: task.filename, size: null, taskId: task.task_id, batchId };
        this.rows.set(row.id, row);
        this.byTask.set(task.task_id, row);
      }
      const fields = {
        status: task.status,
        totalChunks: task.total_chunks,
        completedChunks: task.completed_chunks,
        error: task.error,
        documentId: task.document_id,
        replacesVersion: task.replaces_version,
      };
      if (Object.entries(fields).some(([k, v]) => row[k] !== v)) {
        if (FINAL.has(task.status) && row.status !== task.status) settled = true;
        Object.assign(row, fields);
        changed = true;
      }
    }
    if (changed) this.emit("change");
    if (settled) this.emit("settled");
    return changed;
  }

  // Poll one batch while someone watches: 500 ms, doubling up to 5 s while nothing moves (halving again
  // when something does); stops for good when the batch is done.
  async poll(batchId) {
    if (!this.watch || this.polling.get(batchId) === this.watch.signal) return;
    const signal = this.watch.signal;
    this.polling.set(batchId, signal);
    let delay = POLL_FIRST_MS;
    try {
      while (!signal.aborted) {
        let status = null;
        try {
          status = await api(`/tasks/${batchId}/status`, { signal });
        } catch (err) {
          if (err.name === "AbortError") return;
          if (err instanceof ApiError && err.status === 404) {
            // Deleted with its collection, removed by retention, or not visible to this key: its rows
            // still under way would otherwise say "processing" for good.
            this.forget(batchId);
            this.gone(batchId);
            return;
          }
        }
        if (status) {
          const moved = this.apply(status, batchId);
          if (status.done) {
            this.forget(batchId);
            this.emit("settled");
            return;
          }
          delay = moved ? Math.max(POLL_FIRST_MS, delay / 2) : Math.min(POLL_MAX_MS, delay * 2);
        } else {
          delay = Math.min(POLL_MAX_MS, delay * 2);
        }
        await sleep(delay, signal);
      }
    } finally {
      if (this.polling.get(batchId) === signal) this.polling.delete(batchId);
    }
  }

  forget(batchId) {
    this.batchIds = this.batchIds.filter((id) => id !== batchId);
  }

  // The batch is no longer on the server: its rows not finished yet end failed, saying so.
  gone(batchId) {
    const error = "No longer on the server: its collection or document was deleted (or the upload was removed).";
    const left = [...this.rows.values()].filter((row) => row.batchId === batchId && !FINAL.has(row.status));
    for (const row of left) this.update(row, { status: "failed", error });
    if (left.length) this.emit("settled");
  }
}

const trackers = new Map();

// By the collection's id: a collection renamed (Admin, another tab, the CLI), selected or not, before a
// reload or not, keeps its uploads and the files not sent yet (kept by name, they were left under the old
// one: unshown, and sent there, a 404).
export function tracker(collectionId) {
  if (!trackers.has(collectionId)) trackers.set(collectionId, new Tracker(collectionId));
  return trackers.get(collectionId);
}

// Files picked or dropped that the server has not received yet (their bytes live only in this tab): a
// reload or a closed tab loses them, unlike a sent batch, which resumes.
export function unsentUploads() {
  const unsent = new Set(["waiting", "hashing", "sending", "unsent"]);
  return [...trackers.values()].some((t) => [...t.rows.values()].some((row) => unsent.has(row.status)));
}

export function uploadLimits(status) {
  return { ...DEFAULT_LIMITS, ...(status?.upload || {}) };
}
