// The card of Chat, Search and Documents for a key that reaches no collection (every one it had deleted, or
// none it may still read): those views showed `default`, which it cannot read ("Answers come from the
// 'default' collection", "no collection 'default'"), and asked the API for it. One sentence instead, and
// no request of the view.
//
// An admin may give the key a collection meanwhile: the card stayed until a reload. The key's collections
// are asked for again when the tab is shown or focused, and every CHECK_MS while it is visible (never in a
// hidden tab); once one is reachable, `reachable()` shows the view itself.

import { h } from "../dom.js";

const CHECK_MS = 15000;

export function mount(root, ctx, reachable) {
  root.append(
    h(
      "section",
      { class: "card narrow", "aria-labelledby": "no-collection-title" },
      h("h1", { id: "no-collection-title" }, "No collection"),
      h("p", {}, "This API key can reach no collection: there is nothing to search, chat about or list."),
      h("p", { class: "muted" }, "Ask an admin to give it access to a collection: this page shows it once given."),
    ),
  );
  let shown = true;
  let timer = null;
  let asking = false;
  const visible = () => document.visibilityState === "visible";
  function schedule() {
    clearTimeout(timer);
    timer = visible() ? setTimeout(check, CHECK_MS) : null;
  }
  async function check() {
    if (!shown || asking || !visible()) return;
    asking = true;
    try {
      await ctx.reloadCollections();
    } catch {
      // The server unreachable or failing: asked again later. A revoked key: rag:unauthorized signs out.
    } finally {
      asking = false;
    }
    if (!shown) return;
    if (ctx.collections.length) reachable();
    else schedule();
  }
  const onVisibility = () => (visible() ? check() : schedule());
  document.addEventListener("visibilitychange", onVisibility);
  window.addEventListener("focus", check);
  schedule();
  return {
    unmount() {
      shown = false;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisibility);
      window.removeEventListener("focus", check);
    },
  };
}
