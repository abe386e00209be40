// The Admin view's Tasks (#/admin/tasks, admin keys only): the ingestion tasks newest first (status, file,
// collection, attempts, the reason of a failure in full, times), filtered by status and collection, a page
// at a time (pager.js: the page is in the URL). A file's name links to its document while it has one. A
// failed task is retried, a queued one cancelled, or every failed one of the collection chosen (else of
// every collection) retried, in one request, after a confirmation naming how many. Each outcome, or the
// server's refusal in its own words, is said on the page.
// The API: GET /admin/tasks, POST /admin/tasks/{id}/retry|cancel, POST /admin/tasks/retry.

import { ApiError, api } from "../api.js";
import { clear, confirmDialog, h, plural, timeNode } from "../dom.js";
import { href, navigate } from "../router.js";
import { lastPageInstead, pageOf, pager } from "./pager.js";

const PER = 50;
const STATUSES = ["queued", "processing", "completed", "failed", "duplicate"];
const TONE = { completed: "ok", failed: "error", processing: "warn", queued: "warn" };

// The list's place in the URL: #/admin/tasks?status=failed&collection=<id>&page=2.
function paramsOf(query) {
  const status = STATUSES.includes(query.get("status")) ? query.get("status") : "";
  return { status, collection: query.get("collection") || "", page: pageOf(query, PER) };
}

function tasksHref(params, changes = {}) {
  const next = { ...params, ...changes };
  const query = {};
  if (next.status) query.status = next.status;
  if (next.collection) query.collection = next.collection;
  if (next.page > 1) query.page = next.page;
  return href("admin", "tasks", query);
}


export function tasksSection(ctx) {
  let params = { status: "", collection: "", page: 1 };
  let loads = 0; // the answer of the last load only is drawn (a filter changed meanwhile)
  const body = h("tbody");
  const error = h("p", { class: "form-error admin-error", role: "alert" });
  // What the last action did (retried, cancelled, skipped and why): stays until the next one.
  const result = h("div", { class: "tasks-result", role: "status" });
  const status = h(
    "select",
    { id: "tasks-status" },
    h("option", { value: "" }, "Every status"),
    STATUSES.map((s) => h("option", { value: s }, s)),
  );
  const collection = h("select", { id: "tasks-collection" });
  const refresh = h("button", { type: "button", onclick: () => load() }, "Refresh");
  const retryAll = h("button", { type: "button", onclick: () => retryAllFailed() }, "Retry all failed");
  // On a phone the table scrolls sideways inside this box: it takes the focus (arrows scroll it), as rows
  // of finished tasks hold no button or link that would.
  const wrap = h(
    "div",
    { class: "table-wrap", role: "region", "aria-label": "Tasks, newest first", tabindex: "0" },
    h(
      "table",
      { class: "admin-table tasks-table" },
      h("caption", { class: "visually-hidden" }, "Ingestion tasks, newest first"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Status", "Document", "Attempts", "Reason", "Times"].map((t) => h("th", { scope: "col", class: t === "Attempts" ? "num" : null }, t)),
          h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
        ),
      ),
      body,
    ),
  );
  const paging = pager(
    { first: "First page of tasks", previous: "Previous page of tasks", next: "Next page of tasks", last: "Last page of tasks", page: "Page of tasks" },
    (page) => tasksHref(params, { page }),
  );
  const el = h(
    "section",
    { class: "admin-section", "aria-labelledby": "tasks-title" },
    h("h2", { id: "tasks-title", tabindex: "-1" }, "Tasks"),
    h("p", { class: "muted small" }, "Every file uploaded is a task, processed by a worker. A failed one can be retried (its stored file is processed anew), a queued one cancelled."),
    h(
      "div",
      { class: "toolbar" },
      h("label", { class: "field", for: status.id }, h("span", {}, "Status"), status),
      h("label", { class: "field", for: collection.id }, h("span", {}, "Collection"), collection),
      h("div", { class: "row tasks-actions" }, refresh, retryAll),
    ),
    error,
    result,
    wrap,
    paging.el,
  );

  const filter = () => navigate(tasksHref(params, { status: status.value, collection: collection.value, page: 1 }));
  status.addEventListener("change", filter);
  collection.addEventListener("change", filter);

  // The collections as ctx.collections says now (by id, so a rename is followed); one filtered by that is
  // gone stays offered by its id until the filter changes (the list then says the server's 404).
  function drawCollections() {
    const options = [h("option", { value: "" }, "Every collection"), ...ctx.collections.map((c) => h("option", { value: c.id }, c.name))];
    if (params.collection && !ctx.collections.some((c) => c.id === params.collection)) options.push(h("option", { value: params.collection }, params.collection));
    clear(collection).append(...options);
    collection.value = params.collection;
  }

  const nameOf = (task) => task.filename || "(no name)";
  // The task's document (#/documents/<id>), while it has one: a deleted document's task keeps the name
  // only (the API's document_id is null then).
  const documentName = (task) =>
    task.document_id ? h("a", { href: href("documents", task.document_id), title: `${nameOf(task)}: the document` }, nameOf(task)) : nameOf(task);

  function row(task) {
    const actions = h("div", { class: "row-actions" });
    // A queued task whose queue message is missing (`stuck`) is queued again by a retry, as a failed one.
    if (task.status === "failed" || (task.status === "queued" && task.stuck)) {
      actions.append(h("button", { type: "button", class: "quiet", "aria-label": `Retry ${nameOf(task)}`, onclick: () => retry(task) }, "Retry"));
    }
    if (task.status === "queued") {
      actions.append(h("button", { type: "button", class: "quiet danger-text", "aria-label": `Cancel ${nameOf(task)}`, onclick: () => cancel(task) }, "Cancel"));
    }
    const reason = task.error || task.stuck;
    const times = [["Created", task.created_at], ["Started", task.started_at], ["Finished", task.finished_at]]
      .filter(([, iso]) => iso)
      .map(([label, iso]) => h("div", { class: "nowrap" }, h("span", { class: "muted" }, `${label} `), timeNode(iso)));
    return h(
      "tr",
      { "data-id": task.task_id, "data-name": task.filename },
      h("td", {}, h("span", { class: `badge ${TONE[task.status] ?? ""}` }, task.status)),
      h("td", { class: "name-cell" }, h("strong", {}, documentName(task)), h("div", { class: "muted small" }, task.collection)),
      h("td", { class: "num" }, String(task.attempts), task.failures ? h("div", { class: "muted small nowrap" }, plural(task.failures, "failure", "failures")) : null),
      h("td", { class: "task-reason" }, reason ? h("span", { class: task.error ? null : "warn-text" }, reason) : h("span", { class: "muted" }, "—")),
      h("td", { class: "small" }, times),
      h("td", {}, actions),
    );
  }

  async function load() {
    const mine = ++loads;
    wrap.setAttribute("aria-busy", "true");
    const query = { status: params.status, collection: params.collection, limit: PER, offset: (params.page - 1) * PER };
    let data;
    try {
      data = await api("/admin/tasks", { query });
    } catch (err) {
      if (mine !== loads) return;
      wrap.removeAttribute("aria-busy");
      error.textContent = err.message;
      clear(body);
      paging.el.hidden = true;
      return;
    }
    if (mine !== loads || !el.isConnected) return;
    const lastPage = lastPageInstead(params.page, PER, data.total, data.items.length);
    if (lastPage) {
      navigate(tasksHref(params, { page: lastPage }), { replace: true });
      return;
    }
    error.textContent = "";
    wrap.removeAttribute("aria-busy");
    const none = h("tr", {}, h("td", { colspan: "6", class: "muted" }, params.status || params.collection ? "No task matches these filters." : "No tasks."));
    clear(body).append(...(data.items.length ? data.items.map(row) : [none]));
    paging.show({ page: params.page, per: PER, total: data.total, count: data.items.length, text: "Tasks" });
    paging.el.hidden = !data.total;
  }

  // One outcome on the page: a sentence, and the tasks left as they were with why (a list).
  function say(sentence, skipped = [], kind = "ok") {
    clear(result).append(h("p", { class: kind === "error" ? "form-error" : null }, sentence));
    if (skipped.length) result.append(h("ul", { class: "small" }, skipped.map((s) => h("li", {}, s))));
  }

  async function retry(task) {
    try {
      await api(`/admin/tasks/${encodeURIComponent(task.task_id)}/retry`, { method: "POST" });
    } catch (err) {
      say(`“${nameOf(task)}” was not retried: ${err.message}`, [], "error");
      await load();
      return;
    }
    say(`“${nameOf(task)}” is queued again: a worker processes its stored file anew.`);
    await load();
  }

  async function cancel(task) {
    const question = `Cancel the queued task of “${nameOf(task)}”? It is not processed: it and its document fail with “Cancelled by” your key's name.`;
    if (!(await confirmDialog(question, "Cancel task"))) return;
    try {
      await api(`/admin/tasks/${encodeURIComponent(task.task_id)}/cancel`, { method: "POST" });
    } catch (err) {
      say(`“${nameOf(task)}” was not cancelled: ${err.message}`, [], "error");
      await load();
      return;
    }
    say(`“${nameOf(task)}” is cancelled.`);
    await load();
  }

  // Every failed task of the collection filtered by, else of every collection the key reaches: how many is
  // asked first, and how many of them a retry would queue again (the server counts them: a task whose
  // document was deleted stays failed), said in the confirmation; then ONE request retries them all (the
  // server goes through them in slices) and says which it left as they were, and why.
  async function retryAllFailed() {
    const chosen = ctx.collections.find((c) => c.id === params.collection);
    let total, retryable;
    try {
      ({ total, retryable } = await api("/admin/tasks", { query: { status: "failed", collection: params.collection, limit: 1 } }));
    } catch (err) {
      say(`Nothing was retried: ${err.message}`, [], "error");
      return;
    }
    const where = params.collection ? `in “${chosen?.name ?? params.collection}”` : "in every collection";
    if (!total) {
      say(`No failed task ${where}: nothing to retry.`);
      return;
    }
    if (!retryable) {
      say(`${plural(total, "failed task", "failed tasks")} ${where}, none of which can be retried now (each one's Retry button says why): nothing to retry.`);
      return;
    }
    const question = retryable === total
      ? `Retry ${plural(total, "failed task", "failed tasks")} ${where}? Their stored files are processed anew.`
      : `${plural(total, "failed task", "failed tasks")} ${where}, ${retryable} of them can be retried (a retry skips the others, saying why). Retry ${retryable}? Their stored files are processed anew.`;
    if (!(await confirmDialog(question, `Retry ${retryable}`))) return;
    let answer;
    try {
      const json = params.collection ? { collection: params.collection } : { all: true };
      answer = await api("/admin/tasks/retry", { method: "POST", json });
    } catch (err) {
      // The server retries in slices: a failure part way (5xx, or no answer) leaves the earlier ones queued;
      // a 4xx refused the request before any.
      const partWay = !(err instanceof ApiError) || err.status >= 500 || !err.status;
      const note = partWay ? ["Tasks retried before it stopped are queued again (the list shows them)."] : [];
      say(`The retry stopped: ${err.message}`, note, "error");
      await load();
      return;
    }
    // The answer lists at most 1,000 of each (`truncated`); its counts are all of them.
    const skipped = answer.skipped.map((s) => s.reason);
    const parts = [`${plural(answer.done_count, "task", "tasks")} queued again`];
    const left = answer.skipped_count;
    if (left) parts.push(`${left} left as ${left === 1 ? "it was" : "they were"}`);
    if (left > skipped.length) skipped.push(`… and ${left - skipped.length} more.`);
    say(`${parts.join("; ")}.`, skipped);
    await load();
  }

  return {
    el,
    // The list as the URL says (a filter, a page), or again (the collections changed).
    show(route) {
      params = paramsOf(route.query);
      status.value = params.status;
      drawCollections();
      load();
    },
    drawCollections,
  };
}
