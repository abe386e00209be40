// The Documents list's query: its sort, filters, page and page size, read from the URL and written back to
// it (every state of the list is a link).

import { cutText } from "../dom.js";
import { href } from "../router.js";
import { pageOf } from "./pager.js";
import { METADATA_MAX } from "./metadata_filter.js";

export const PAGE_SIZES = [10, 25, 50, 100];
const PAGE_SIZE = 50;
export const NAME_MAX = 255; // the API's limit (GET /documents?name=)
export const CONTAINS_MAX = 1000; // the API's limit on a text of GET /documents?text=
export const STATUSES = ["queued", "processing", "ready", "failed"];
// Column -> the API's sort key, and the order a first click asks for (names A-Z, numbers and dates biggest
// or newest first).
export const COLUMNS = [
  { key: "name", label: "Name", first: "asc" },
  { key: "type", label: "Type", first: "asc" },
  { key: "status", label: "Status", first: "asc" },
  { key: "chunks", label: "Chunks", first: "desc", numeric: true },
  { key: "size", label: "Size", first: "desc", numeric: true },
  { key: "uploaded", label: "Uploaded", first: "desc" },
];

export function listParams(query) {
  const sort = COLUMNS.some((c) => c.key === query.get("sort")) ? query.get("sort") : "uploaded";
  const order = query.get("order") === "asc" || query.get("order") === "desc" ? query.get("order") : "desc";
  const asked = Number.parseInt(query.get("per") || "", 10);
  const per = PAGE_SIZES.includes(asked) ? asked : PAGE_SIZE;
  return {
    sort,
    order,
    page: pageOf(query, per),
    per,
    status: STATUSES.includes(query.get("status")) ? query.get("status") : "",
    type: query.get("type") || "",
    name: cutText((query.get("name") || "").trim(), NAME_MAX),
    has: cutText((query.get("has") || "").trim(), CONTAINS_MAX),
    meta: cutText((query.get("meta") || "").trim(), METADATA_MAX),
  };
}

// What "Clear filters" resets; the sort and page size stay.
export const NO_FILTERS = { status: "", type: "", name: "", has: "", meta: "", page: 1 };
export const isFiltered = (params) => Boolean(params.status || params.type || params.name || params.has || params.meta);

export function listHref(params, changes) {
  const next = { ...params, ...changes };
  const query = {};
  if (next.sort !== "uploaded") query.sort = next.sort;
  if (next.order !== "desc") query.order = next.order;
  if (next.status) query.status = next.status;
  if (next.type) query.type = next.type;
  if (next.name) query.name = next.name;
  if (next.has) query.has = next.has;
  if (next.meta) query.meta = next.meta;
  if (next.per !== PAGE_SIZE) query.per = String(next.per);
  if (next.page > 1) query.page = String(next.page);
  return href("documents", null, query);
}
