// The one client of the REST API in the browser: the API key header, JSON errors as ApiError with the
// server's sentence, Server-Sent Events read from fetch, and downloads that need the key.

const KEY_STORAGE = "rag.apiKey";

export const auth = {
  // sessionStorage: the key lives as long as the tab, never in a URL or a cookie.
  get: () => sessionStorage.getItem(KEY_STORAGE),
  set: (key) => sessionStorage.setItem(KEY_STORAGE, key),
  clear: () => sessionStorage.removeItem(KEY_STORAGE),
};

// `code`: the error's stable name when the server gives one ("collection_not_found"), else null. Branch on
// it, never on the sentence.
export class ApiError extends Error {
  constructor(status, message, code = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export const COLLECTION_NOT_FOUND = "collection_not_found";
// A 409 of a document being written (its new version's chunks): not an edit made meanwhile; try later.
export const DOCUMENT_BUSY = "document_busy";
// A 409 of an "all matching" action: the documents its selection names, locked, are not as many as the
// `expected_count` the user confirmed (added, changed or deleted meanwhile); nothing was changed.
export const SELECTION_CHANGED = "selection_changed";

// FastAPI's 422 detail is a list of {loc, msg}; every other error is one sentence.
function detailText(detail, status) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => {
        const where = (e.loc || []).filter((p) => p !== "body" && p !== "query").join(".");
        return where ? `${where}: ${e.msg}` : e.msg;
      })
      .join("; ");
  }
  return `The server answered ${status}.`;
}

// JSON.parse that keeps an integer beyond 2^53 as written (an id from another system, set through the API or
// an import): a plain parse rounds it, and saving an edit of another key of the same metadata wrote the
// rounded value back. JSON.stringify writes such a value as it came (JSON.rawJSON).
const RAW_JSON = typeof JSON.rawJSON === "function";

function exactIntegers(key, value, context) {
  if (RAW_JSON && typeof value === "number" && !Number.isSafeInteger(value) && /^-?\d+$/.test(context?.source ?? "")) {
    return JSON.rawJSON(context.source);
  }
  return value;
}

export function parseJson(text) {
  return JSON.parse(text, exactIntegers);
}

function headers(extra = {}) {
  const h = { ...extra };
  const key = auth.get();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function send(path, { method = "GET", json, body, query, signal, accept } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  const extra = accept ? { Accept: accept } : {};
  if (json !== undefined) extra["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: headers(extra),
      body: json !== undefined ? JSON.stringify(json) : body,
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The server cannot be reached. Is rag-server running?");
  }
  if (!response.ok) {
    let detail = null;
    let code = null;
    try {
      ({ detail, code = null } = await response.json());
    } catch {
      /* not JSON: a proxy's page; the status says enough */
    }
    if (response.status === 401) window.dispatchEvent(new CustomEvent("rag:unauthorized"));
    // A collection this request named is gone (deleted or renamed elsewhere, or out of the key's reach):
    // the app checks whether it is the one selected.
    if (code === COLLECTION_NOT_FOUND) window.dispatchEvent(new CustomEvent("rag:collection-missing"));
    throw new ApiError(response.status, detailText(detail, response.status), typeof code === "string" ? code : null);
  }
  return response;
}

// JSON in, JSON out; null for 204.
export async function api(path, options = {}) {
  const response = await send(path, options);
  if (response.status === 204) return null;
  return parseJson(await response.text());
}

// POST `json` and yield {event, data} for each Server-Sent Event (`data` parsed as JSON).
export async function* streamEvents(path, json, signal) {
  const response = await send(path, { method: "POST", json, signal, accept: "text/event-stream" });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = text;
          else if (field === "data") data.push(text);
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
    }
  } finally {
    reader.releaseLock();
  }
}

// Multipart upload (FormData); JSON back.
export function upload(path, formData, signal) {
  return api(path, { method: "POST", body: formData, signal });
}

// A download that needs the API key: fetch it, then hand the bytes to the browser as a file, under the
// name the server gives (Content-Disposition: an imported document's text is "people.csv.txt"), else
// `filename`.
export async function download(path, filename) {
  const response = await send(path);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = dispositionName(response.headers.get("Content-Disposition")) || filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function dispositionName(header) {
  const encoded = /filename\*=UTF-8''([^;]+)/i.exec(header || "");
  if (!encoded) return "";
  try {
    return decodeURIComponent(encoded[1].trim());
  } catch {
    return "";
  }
}
