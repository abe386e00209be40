// What the server runs on and how busy ingestion is; refreshed every few seconds while shown. A refresh
// that fails keeps the facts last known, marked with their time, and an alert says so until one succeeds.

import { clear, formatTime, h, timeNode } from "../dom.js";

const REFRESH_MS = 5000;

// With its seconds: the facts are refreshed every 5 s (the app's one time style otherwise: dom.js).

function row(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

export function mount(root, ctx) {
  // The facts are described by the line under them: "Updated ..." or, once a refresh failed, "As of ...".
  const list = h("dl", { class: "facts", "aria-describedby": "status-updated" });
  const updated = h("p", { class: "muted small", id: "status-updated" });
  // In the page from the start, empty: a live region's first text is announced, one added with it may not be.
  const alert = h("p", { class: "status-alert", role: "alert" });
  root.append(
    h("section", { class: "card narrow", "aria-labelledby": "status-title" },
      h("h1", { id: "status-title" }, "Status"), alert, list, updated),
  );

  function show(s) {
    const llm = s.llm.configured ? `${s.llm.provider}: ${s.llm.model}` : "none — answers are extractive (quoted from the sources)";
    clear(list).append(
      ...row("API key", s.key.name ? `${s.key.name} (${s.key.role}${s.key.all_collections ? ", every collection" : ", some collections"})` : "none: the API is open on this machine"),
      ...row("BM25 engine", s.bm25_engine),
      ...row("Embedding model", s.embedding.model ? `${s.embedding.model} (${s.embedding.dim} dimensions)` : "not set"),
      ...row("LLM", llm),
      ...row("Ingestion queue", `${s.tasks.queued} queued, ${s.tasks.processing} processing`),
      ...row("Version", s.version),
    );
    list.classList.remove("stale");
    updated.replaceChildren("Updated ", timeNode(ctx.statusAt, { seconds: true }));
    alert.textContent = "";
  }

  // A failed refresh used to put its error where the time was: the facts above looked current (a queue of
  // 0 when the server had gone). They stay, as what was known then, and say so.
  function showStale(err) {
    const at = formatTime(ctx.statusAt, { seconds: true });
    list.classList.add("stale");
    updated.replaceChildren("As of ", timeNode(ctx.statusAt, { seconds: true }), ": not current");
    const text = `The facts shown are from ${at} and could not be refreshed: ${err.message}`;
    // Every 5 s the same failure: announced once, not at each attempt.
    if (alert.textContent !== text) alert.textContent = text;
  }

  let timer = null;
  let shown = true;
  async function refresh() {
    try {
      const s = await ctx.refreshStatus();
      if (shown) show(s);
    } catch (err) {
      if (shown) showStale(err);
    }
    // Left while the request was on its way: no timer of a view that is gone.
    if (shown) timer = setTimeout(refresh, REFRESH_MS);
  }
  if (ctx.status) show(ctx.status);
  timer = setTimeout(refresh, REFRESH_MS);
  return {
    unmount() {
      shown = false;
      clearTimeout(timer);
    },
  };
}
