// Admin (#/admin, admin keys only): the collections (create, edit, delete) and the API keys (create, shown
// once; revoke). Everything goes through the same API routes the CLI's server-side twins use.

import { clear, h } from "../dom.js";
import { collectionsSection } from "./admin_collections.js";
import { keysSection } from "./admin_keys.js";

export function mount(root, ctx) {
  if (!ctx.can("admin")) {
    root.append(
      h(
        "section",
        { class: "card narrow", "aria-labelledby": "admin-title" },
        h("h1", { id: "admin-title" }, "Admin"),
        h("p", {}, "Collections and API keys are managed with an admin key. This key is a ", ctx.status.key.role, "'s."),
      ),
    );
    return {};
  }
  const collections = collectionsSection(ctx);
  const keys = keysSection(ctx);
  // The collections fetched again (a change here, a 404 of one gone, the key form entered): the list and
  // what a new key may be limited to follow.
  const follow = () => {
    collections.draw();
    keys.refreshCollections();
  };
  window.addEventListener("rag:collections", follow);
  root.append(
    h(
      "div",
      { class: "page admin" },
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Admin"), h("p", { class: "muted small" }, "Collections and API keys of this server"))),
      collections.el,
      keys.el,
    ),
  );
  return {
    unmount() {
      window.removeEventListener("rag:collections", follow);
      clear(root);
    },
  };
}
