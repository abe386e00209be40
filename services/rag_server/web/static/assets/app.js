// The app shell: sign-in when the server needs a key, the navigation and collection switcher, and one
// view at a time in <main>, chosen by the URL's fragment.
//
// A view module exports `mount(root, ctx, route)` and returns {update(route)?, unmount()?}:
//   root  - the element it owns (emptied for it)
//   ctx   - {status, statusAt, collection, can(role), collections, refreshStatus(), dropTarget} (below);
//           `rag:collections` on window: ctx.collections was fetched again
//   route - {view, id, query} from router.parseRoute
// `update` is called when only the route's id/query changed; without it the view is mounted again.

import { api, ApiError, auth } from "./api.js";
import { clear, confirmDialog, h, toast } from "./dom.js";
import { href, parseRoute } from "./router.js";
import { unsentUploads } from "./upload.js";
import * as admin from "./views/admin.js";
import * as chat from "./views/chat.js";
import * as documents from "./views/documents.js";
import * as noCollection from "./views/no_collection.js";
import * as search from "./views/search.js";
import * as status from "./views/status.js";

const VIEWS = { chat, documents, search, status, admin };
// The tab's title until the view names what it shows (a chat's title, a document's name, a query).
const VIEW_TITLES = { chat: "Chat", documents: "Documents", search: "Search", status: "Status", admin: "Admin" };
const ROLE_RANK = { reader: 1, editor: 2, admin: 3 };
// The views that read or write a collection: a key that reaches none is told so there, and they ask nothing.
const NEED_COLLECTION = new Set(["chat", "documents", "search"]);
const COLLECTION_STORAGE = "rag.collection";
// The selected collection's id beside its name: a tab reloaded after a rename elsewhere follows it by id (by
// its name alone it found none, and showed `default` without a word).
const COLLECTION_ID_STORAGE = "rag.collectionId";

const main = document.getElementById("main");
const nav = document.querySelector(".mainnav");
const topbarEnd = document.querySelector(".topbar-end");
const collectionSelect = document.getElementById("collection");
const signOut = document.getElementById("sign-out");
const whoami = document.getElementById("whoami");

const ctx = {
  status: null,
  statusAt: null, // when `status` was fetched: the Status view says how old its facts are
  collections: [],
  collection: sessionStorage.getItem(COLLECTION_STORAGE) || "default",
  // The selected collection's id (uploads are kept by it), once the collections are loaded.
  get collectionId() {
    return this.collections.find((c) => c.name === this.collection)?.id ?? this.collection;
  },
  // Where files dropped anywhere on the page go: {over(event), drop(dataTransfer)}, set by the view that
  // uploads while it is shown (the Documents list's upload panel); null: no view takes files.
  dropTarget: null,
  can(role) {
    return ROLE_RANK[this.status?.key.role] >= ROLE_RANK[role];
  },
  // The collections again (one created, renamed or deleted in Admin): the top bar's switcher follows.
  async reloadCollections() {
    await loadCollections();
  },
  // A document's page selects its collection (by id), without showing the view again: a link to a document
  // of another collection left the tab's own selected, so "Search in it" searched that one and found nothing,
  // and "All documents" listed it.
  selectCollectionOf(id) {
    const name = this.collections.find((c) => c.id === id)?.name;
    if (!name || name === this.collection) return;
    selectCollection(name);
    collectionSelect.value = name;
  },
  // The first key, made in Admin while the API was open, closed it: this tab goes on signed in with it.
  async adoptKey(key) {
    auth.set(key);
    await this.refreshStatus();
    showIdentity();
  },
  async refreshStatus() {
    this.status = await api("/status");
    this.statusAt = new Date();
    return this.status;
  },
};

let current = null; // {name, view}
let shownHash = null;

function render() {
  const route = parseRoute();
  // A new place starts at its top: a pager at the bottom of a long page must not leave the next page
  // scrolled to its bottom, nor a document opened from the end of the list open at its last chunks.
  if (location.hash !== shownHash) main.scrollTop = 0;
  shownHash = location.hash;
  for (const link of nav.querySelectorAll("a")) {
    const active = link.getAttribute("href") === `#/${route.view}`;
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (current && current.name === route.view && current.view.update) {
    current.view.update(route);
    return;
  }
  current?.view.unmount?.();
  ctx.dropTarget = null; // a view that did not take its target back takes no more files
  clear(main);
  document.title = `${VIEW_TITLES[route.view]} · rag-server`;
  const root = h("div", { class: `view view-${route.view}` });
  main.append(root);
  if (NEED_COLLECTION.has(route.view) && !ctx.collections.length) {
    current = { name: route.view, view: noCollection.mount(root, ctx, remount) };
    return;
  }
  current = { name: route.view, view: VIEWS[route.view].mount(root, ctx, route) || {} };
}

function remount() {
  current?.view.unmount?.();
  current = null;
  render();
}

// The collection this tab shows, remembered for a reload: its name, and its id (ctx.collections must hold it).
function selectCollection(name) {
  ctx.collection = name;
  sessionStorage.setItem(COLLECTION_STORAGE, name);
  const id = ctx.collections.find((c) => c.name === name)?.id;
  if (id) sessionStorage.setItem(COLLECTION_ID_STORAGE, id);
  else sessionStorage.removeItem(COLLECTION_ID_STORAGE);
}

// Every collection the key reaches, a page (the API's largest) at a time: one page of 200 left a team's
// 201st collection and after (by name) out of the switcher, Admin's list and a new key's choices. One made
// meanwhile, named before a page's end, shifts the rest: a row comes twice, kept once (by id).
async function fetchCollections() {
  const byId = new Map();
  for (let offset = 0; ; ) {
    const page = await api("/collections", { query: { limit: 500, offset } });
    for (const c of page.items) if (!byId.has(c.id)) byId.set(c.id, c);
    offset += page.items.length;
    if (!page.items.length || offset >= page.total) return [...byId.values()];
  }
}

async function loadCollections() {
  const items = await fetchCollections();
  // The selected collection renamed meanwhile (in Admin, another tab, the CLI) is followed by its id: the
  // one of the list loaded before, else (the tab's first load, after a reload) the one remembered.
  const selectedId = ctx.collections.find((c) => c.name === ctx.collection)?.id ?? sessionStorage.getItem(COLLECTION_ID_STORAGE);
  ctx.collections = items;
  let change = null; // "renamed" or "gone": the selected collection changed under this tab
  const same = items.find((c) => c.id === selectedId);
  if (same && same.name !== ctx.collection) {
    change = "renamed";
    selectCollection(same.name);
  } else if (!items.some((c) => c.name === ctx.collection)) {
    const next = (items.find((c) => c.name === "default") ?? items[0])?.name ?? "default";
    // Only a change of name: a key left with no collection falls back on "default" once, not again at
    // every view that fails with it.
    if (next !== ctx.collection) change = "gone";
    selectCollection(next);
  } else selectCollection(ctx.collection); // its id remembered (a tab of before it was)
  clear(collectionSelect);
  for (const c of items) collectionSelect.append(h("option", { value: c.name, selected: c.name === ctx.collection }, c.name));
  collectionSelect.disabled = items.length < 2;
  // Views that show the collections follow (Admin's list and its new key's choices): they kept the list of
  // their mount while another admin created, renamed or deleted some.
  window.dispatchEvent(new CustomEvent("rag:collections"));
  return change;
}

function showSignIn(message) {
  current?.view.unmount?.();
  current = null;
  shownHash = null;
  document.title = "Sign in · rag-server";
  nav.hidden = true;
  topbarEnd.hidden = true;
  const input = h("input", {
    id: "api-key",
    type: "password",
    autocomplete: "current-password",
    required: true,
    spellcheck: "false",
  });
  const error = h("p", { class: "form-error", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "signin card", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("p", { class: "muted" }, "This server needs an API key. It is kept in this tab only."),
    h("label", { for: "api-key" }, "API key"),
    input,
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    auth.set(input.value.trim());
    await start();
  });
  clear(main).append(form);
  input.focus();
}

async function start() {
  try {
    // /health is public and says whether a key is needed: no request is refused before sign-in.
    if (!auth.get()) {
      const health = await api("/health");
      if (health.auth === "locked") {
        showSignIn("No API key exists yet: create one with `rag-server keys create --name me --role admin`.");
        return;
      }
      if (health.auth !== "open") {
        showSignIn("");
        return;
      }
    }
    await ctx.refreshStatus();
    const before = ctx.collection;
    const chosen = sessionStorage.getItem(COLLECTION_STORAGE) !== null; // not the first start's `default`
    // Renamed or deleted elsewhere since this tab last showed it (a reload): said once, as when it happens
    // while the tab is open. A key that cannot read `default`, at its first start, is just shown its own.
    const change = await loadCollections();
    if (change && chosen) sayCollectionChange(change, before);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      const hadKey = Boolean(auth.get());
      auth.clear();
      showSignIn(hadKey ? err.message : "");
      return;
    }
    // The server unreachable or failing (503): what happened, and a way to try again without a reload.
    const retry = h("button", { type: "button", class: "primary", onclick: () => start() }, "Try again");
    document.title = "Not connected · rag-server";
    clear(main).append(
      h(
        "section",
        { class: "signin card", "aria-labelledby": "start-error-title" },
        h("h1", { id: "start-error-title" }, "The app could not start"),
        h("p", { class: "form-error", role: "alert" }, err.message),
        retry,
      ),
    );
    retry.focus();
    return;
  }
  nav.hidden = false;
  topbarEnd.hidden = false;
  showIdentity();
  current = null;
  render();
}

// The top bar's who-am-I, Sign out and Admin link, from the status of the key in use.
function showIdentity() {
  signOut.hidden = ctx.status.auth === "open";
  nav.querySelector('a[href="#/admin"]').hidden = !ctx.can("admin");
  const key = ctx.status.key;
  whoami.textContent = key.name ? `${key.name} · ${key.role}` : "open (no API key)";
}

collectionSelect.addEventListener("change", () => {
  selectCollection(collectionSelect.value);
  showCollection();
});
// The view again, of the collection now selected. Search's document filter names a document of the
// collection left: it goes with it (a search of the new collection within that document found nothing, and
// said to try other words).
function showCollection() {
  const route = parseRoute();
  if (route.view === "search" && route.query.has("doc")) {
    route.query.delete("doc");
    history.replaceState(history.state, "", href("search", null, route.query));
  }
  remount();
}
function sayCollectionChange(change, before) {
  const showing = ctx.collections.length ? `showing “${ctx.collection}”.` : "this key reaches no other collection.";
  toast(
    change === "renamed"
      ? `The collection “${before}” is now called “${ctx.collection}”.`
      : `The collection “${before}” no longer exists (deleted, or this key may not read it): ${showing}`,
    "error",
  );
}

// A request named a collection that is gone. If it is the one selected (deleted or renamed elsewhere while
// this tab was open), the tab says so and shows the collection now selected; before, every view said only
// "no collection 'x'" and the switcher offered it until a reload.
let checkingCollections = false;
window.addEventListener("rag:collection-missing", async () => {
  if (checkingCollections || !ctx.status || nav.hidden) return;
  checkingCollections = true;
  const before = ctx.collection;
  let change;
  try {
    change = await loadCollections();
  } catch {
    return; // the server unreachable or the key refused: that request's own error says so
  } finally {
    checkingCollections = false;
  }
  // Admin says itself what became of a collection it acted on, and lists them all: a second toast about
  // the same collection, in other words, only repeated it.
  if (!change || current?.name === "admin") return;
  sayCollectionChange(change, before);
  // A dialog of the view left (Set metadata of its selection) goes with it: it stayed, modal, over the view
  // shown again, and sent to the old collection again.
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  showCollection();
  // What had the focus went with the view: the switcher has it, where another collection is chosen.
  if (!main.contains(document.activeElement) && !collectionSelect.disabled) collectionSelect.focus();
});
// Nothing of the signed-out key may stay in the tab for whoever signs in next: its upload list (file
// names, links), its chat, its collection. The app starts afresh, on no particular page.
// Files still being sent are asked about first: the key they are sent with goes with the sign-out.
signOut.addEventListener("click", async () => {
  const leave = !unsentUploads() || (await confirmDialog("Files are still being sent: sign out and stop them?", "Sign out"));
  if (!leave) return;
  auth.clear();
  for (const name of Object.keys(sessionStorage)) if (name.startsWith("rag.")) sessionStorage.removeItem(name);
  location.replace(location.pathname);
});
window.addEventListener("hashchange", () => {
  if (ctx.status && !nav.hidden) render();
});
// The one handler of files dropped on the page: they go to the current view's ctx.dropTarget, wherever on
// the page they land. Without a target (any view but an editor's Documents list; a reader's anywhere) the
// browser left the app to show the file: the app stays, and says where uploads go.
const carriesFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
window.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  if (!ctx.dropTarget) return;
  event.dataTransfer.dropEffect = "copy";
  ctx.dropTarget.over(event);
});
window.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  if (ctx.dropTarget) {
    ctx.dropTarget.drop(event.dataTransfer); // now: the DataTransfer is emptied once this handler returns
    return;
  }
  if (!ctx.status || nav.hidden) return;
  toast(
    ctx.can("editor") ? "To upload files, drop them on the Documents page." : "This API key cannot upload files: it is a reader's.",
    "error",
  );
});
// Reloading or closing the tab while files are still being sent lost them without a word: the browser
// asks first (a sent batch resumes after a reload; the bytes of an unsent file exist only in this tab).
window.addEventListener("beforeunload", (event) => {
  if (!unsentUploads()) return;
  event.preventDefault();
  event.returnValue = true; // what browsers before Chromium 119 and Safari look for
});
// Any request answered 401 (key revoked meanwhile): back to the sign-in form.
window.addEventListener("rag:unauthorized", () => {
  if (!nav.hidden) {
    auth.clear();
    toast("The API key was not accepted any more: sign in again.", "error");
    // A dialog open over the view (Set metadata, an Admin edit) would stay, modal, over the sign-in form,
    // leaving its key field inert.
    for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
    showSignIn("");
  }
});

start();
