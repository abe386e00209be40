// Admin (#/admin, admin keys only), two pages under one link of the top bar: the collections (create, edit,
// delete) and the API keys (create, shown once; revoke), #/admin; the ingestion tasks (list, retry, cancel),
// #/admin/tasks. Everything goes through the same API routes the CLI's server-side twins use.

import { clear, h } from "../dom.js";
import { href } from "../router.js";
import { collectionsSection } from "./admin_collections.js";
import { keysSection } from "./admin_keys.js";
import { tasksSection } from "./admin_tasks.js";

const PAGES = [
  [null, "Collections and keys"],
  ["tasks", "Tasks"],
];
const pageOf = (route) => (route.id === "tasks" ? "tasks" : null);

export function mount(root, ctx, route) {
  if (!ctx.can("admin")) {
    root.append(
      h(
        "section",
        { class: "card narrow", "aria-labelledby": "admin-title" },
        h("h1", { id: "admin-title" }, "Admin"),
        h("p", {}, "Collections, API keys and ingestion tasks are managed with an admin key. This key is ", /^[aeiou]/.test(ctx.status.key.role) ? "an " : "a ", ctx.status.key.role, "'s."),
      ),
    );
    return {};
  }
  let shown = pageOf(route);
  const links = PAGES.map(([id, text]) => h("a", { href: href("admin", id), dataset: { page: id ?? "" } }, text));
  const content = h("div");
  root.append(
    h(
      "div",
      { class: "page admin" },
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Admin"), h("p", { class: "muted small" }, "Collections, API keys and ingestion tasks of this server"))),
      h("nav", { class: "admin-pages", "aria-label": "Admin pages" }, links),
      content,
    ),
  );

  // The page's sections, made when it is shown: Tasks asks for no keys, and the other way round.
  let sections = null;
  function draw(newRoute) {
    for (const link of links) {
      if ((link.dataset.page || null) === shown) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (shown === "tasks") {
      sections = { tasks: tasksSection(ctx) };
      clear(content).append(sections.tasks.el);
      sections.tasks.show(newRoute);
      return;
    }
    sections = { collections: collectionsSection(ctx), keys: keysSection(ctx) };
    clear(content).append(sections.collections.el, sections.keys.el);
    sections.keys.show(newRoute);
  }

  // The collections fetched again (a change here, a 404 of one gone, the key form entered): the list, what a
  // new key may be limited to and the tasks' filter follow.
  const follow = () => {
    sections.collections?.draw();
    sections.keys?.refreshCollections();
    sections.tasks?.drawCollections();
  };
  window.addEventListener("rag:collections", follow);
  draw(route);
  return {
    // Another page of the keys or the tasks, another filter: that section follows; the other page: drawn.
    update(newRoute) {
      if (pageOf(newRoute) !== shown) {
        shown = pageOf(newRoute);
        draw(newRoute);
      } else (sections.tasks ?? sections.keys).show(newRoute);
    },
    unmount() {
      window.removeEventListener("rag:collections", follow);
      clear(root);
    },
  };
}
