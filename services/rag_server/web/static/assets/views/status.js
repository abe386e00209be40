// What the server runs on and how busy ingestion is; refreshed every few seconds while shown.

import { clear, h } from "../dom.js";

const REFRESH_MS = 5000;

function row(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

export function mount(root, ctx) {
  const list = h("dl", { class: "facts" });
  const updated = h("p", { class: "muted small" });
  root.append(
    h("section", { class: "card narrow", "aria-labelledby": "status-title" },
      h("h1", { id: "status-title" }, "Status"), list, updated),
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
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  let timer = null;
  async function refresh() {
    try {
      show(await ctx.refreshStatus());
    } catch (err) {
      updated.textContent = err.message;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }
  if (ctx.status) show(ctx.status);
  timer = setTimeout(refresh, REFRESH_MS);
  return { unmount: () => clearTimeout(timer) };
}
