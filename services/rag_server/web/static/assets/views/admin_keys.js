// The Admin view's API keys: the list (role, collections, last use; revoked ones on request) a page at a time
// (pager.js: #/admin?page=2), a form for a new key (shown once, with Copy), its access changed in place
// (admin_key_access.js) and revoke. Only a hash of each key is stored: a lost key is revoked and made again.

import { api, ApiError, COLLECTION_NOT_FOUND } from "../api.js";
import { clear, confirmDialog, focusNear, h, rowIndex, timeNode, toast } from "../dom.js";
import { href, navigate } from "../router.js";
import { editKeyAccess, ROLES } from "./admin_key_access.js";
import { lastPageInstead, pageOf, pager } from "./pager.js";

// Keys a page (GET /keys pages by up to 500): a long list of keys no longer comes in one answer.
const PER = 50;
const keysHref = (page) => href("admin", null, page > 1 ? { page } : null);

export function keysSection(ctx) {
  let page = 1;
  let loads = 0; // the answer of the last load only is drawn
  const body = h("tbody");
  const paging = pager(
    { first: "First page of keys", previous: "Previous page of keys", next: "Next page of keys", last: "Last page of keys", page: "Page of keys" },
    keysHref,
  );
  const error = h("p", { class: "form-error admin-error", role: "alert" });
  const formError = h("p", { class: "form-error admin-error", role: "alert" });
  const showRevoked = h("input", { type: "checkbox", id: "keys-revoked" });
  const name = h("input", { id: "new-key-name", required: true, maxlength: "100", pattern: "[A-Za-z0-9][A-Za-z0-9_.@\\-]*", autocomplete: "off", spellcheck: "false", title: "Letters, digits and _ . @ -, from a letter or digit" });
  const role = h("select", { id: "new-key-role" }, ROLES.map(([value, text]) => h("option", { value }, text)));
  const picks = h("div", { class: "key-collections" });
  // As in "Edit access": every collection (new ones too) is said, ticked; untick it to choose some.
  const every = h("input", { type: "checkbox", id: "new-key-every", checked: true });
  const scope = h(
    "fieldset",
    { class: "key-scope" },
    h("legend", {}, "Collections"),
    h("label", { class: "check", for: every.id }, every, h("span", {}, "Every collection, new ones too")),
    picks,
  );
  const syncPicks = () => {
    for (const input of picks.querySelectorAll("input")) input.disabled = every.checked;
  };
  // The key made last, shown until dismissed: it is never shown again.
  const reveal = h("div", { class: "key-reveal card", role: "status", hidden: true });
  // Open (no key yet, loopback): the first key closes the API to every request without one. An admin's
  // only, so the API cannot end up closed with nobody able to manage it; this tab signs in with it.
  const open = ctx.status.auth === "open";
  const openNote = open
    ? h("p", { class: "open-note" }, "The API is open: no key exists yet. The first key closes it to every request without a key, so it is an admin key, and this tab goes on signed in with it.")
    : null;
  if (open) {
    role.value = "admin";
    role.disabled = true;
  }
  scope.disabled = role.value === "admin"; // admins reach every collection
  const form = h(
    "form",
    { class: "admin-form", "aria-label": "New API key" },
    h("label", { class: "field", for: name.id }, h("span", {}, "Name"), name),
    h("label", { class: "field", for: role.id }, h("span", {}, "Role"), role),
    scope,
    h("button", { type: "submit", class: "primary" }, "Create key"),
  );
  const el = h(
    "section",
    { class: "admin-section", "aria-labelledby": "keys-title" },
    h("h2", { id: "keys-title", tabindex: "-1" }, "API keys"),
    h("label", { class: "check", for: showRevoked.id }, showRevoked, " Show revoked keys"),
    error,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "admin-table" },
        h("caption", { class: "visually-hidden" }, "API keys"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Name", "Role", "Collections", "Starts with", "Created", "Last used"].map((t) => h("th", { scope: "col" }, t)),
            h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
          ),
        ),
        body,
      ),
    ),
    paging.el,
    h("h3", {}, "New key"),
    openNote,
    reveal,
    form,
    formError,
  );

  // A key limited to collections all deleted since reaches none: said so (an empty cell said nothing).
  const collectionsOf = (key) =>
    !key.collections ? h("span", { class: "muted" }, "every collection") : key.collections.join(", ") || h("span", { class: "muted" }, "none (deleted)");
  const when = (iso) => timeNode(iso) ?? h("span", { class: "muted" }, "never");

  function row(key) {
    const mine = key.name === ctx.status.key.name;
    const end = key.revoked_at
      ? h("span", { class: "badge error" }, "revoked")
      : [
          h("button", { type: "button", class: "quiet", "aria-label": `Edit access of ${key.name}`, onclick: () => editAccess(key, mine) }, "Edit access"),
          h("button", { type: "button", class: "quiet danger-text", "aria-label": `Revoke ${key.name}`, onclick: () => revoke(key, mine) }, "Revoke"),
        ];
    return h(
      "tr",
      { "data-name": key.name },
      h("td", { class: "name-cell" }, h("strong", {}, key.name), mine ? h("span", { class: "muted small" }, " (this tab)") : null),
      h("td", { class: "nowrap" }, key.role),
      h("td", {}, collectionsOf(key)),
      h("td", { class: "nowrap" }, h("code", {}, `${key.key_prefix}…`)),
      h("td", { class: "nowrap" }, when(key.created_at)),
      h("td", { class: "nowrap" }, when(key.last_used_at)),
      h("td", {}, h("div", { class: "row-actions" }, end)),
    );
  }

  async function load() {
    const mine = ++loads;
    const query = { include_revoked: showRevoked.checked ? "true" : undefined, limit: PER, offset: (page - 1) * PER };
    let data;
    try {
      data = await api("/keys", { query });
    } catch (err) {
      if (mine === loads) error.textContent = err.message;
      return;
    }
    if (mine !== loads || !el.isConnected) return;
    // A page past the end (the last keys of the last page revoked, an old link): the last page instead.
    const lastPage = lastPageInstead(page, PER, data.total, data.items.length);
    if (lastPage) {
      navigate(keysHref(lastPage), { replace: true });
      return;
    }
    error.textContent = "";
    const none = h("tr", {}, h("td", { colspan: "7", class: "muted" }, ctx.status.auth === "open" ? "No key yet: the API is open on this machine." : "No keys."));
    clear(body).append(...(data.items.length ? data.items.map(row) : [none]));
    paging.show({ page, per: PER, total: data.total, count: data.items.length, text: "Keys" });
    paging.el.hidden = !data.total;
  }

  async function editAccess(key, mine) {
    const saved = await editKeyAccess(key, ctx, mine);
    if (!saved) return;
    toast(`Access of ${saved.name} saved: ${saved.role}, ${saved.collections ? saved.collections.join(", ") : "every collection"}.`);
    // This tab's own key no longer an admin's: the app starts again with what it may do now.
    if (mine && saved.role !== "admin") {
      location.reload();
      return;
    }
    const index = rowIndex(body, key.name);
    await load();
    if (el.isConnected) focusNear(body, index, 'button[aria-label^="Edit access of "]', el.querySelector("#keys-title"));
  }

  async function revoke(key, mine) {
    const warning = mine ? " It is the key this tab is signed in with: you will be asked for another." : "";
    if (!(await confirmDialog(`Revoke the key “${key.name}”? Every client using it is refused at once.${warning}`, "Revoke"))) return;
    const index = rowIndex(body, key.name);
    try {
      await api(`/keys/${encodeURIComponent(key.name)}`, { method: "DELETE" });
    } catch (err) {
      // Revoked meanwhile by another admin: said so, and its row goes (it stayed, to be revoked again).
      const revoked = err instanceof ApiError && err.status === 404;
      toast(revoked ? `The key “${key.name}” was already revoked, in another tab or by another admin.` : err.message, "error");
      if (revoked) await reloadAfterRevoke(index);
      return;
    }
    toast(`Key ${key.name} revoked.`);
    await reloadAfterRevoke(index);
  }

  // Its Revoke went (its row, or its button when revoked keys are shown): the focus goes to the next one.
  async function reloadAfterRevoke(index) {
    await load();
    // This tab's own key revoked: the app is back at its sign-in form, where the focus already is.
    if (index >= 0 && el.isConnected) focusNear(body, index, 'button[aria-label^="Revoke "]', el.querySelector("#keys-title"));
  }

  // A press on a box is a click only if it ends where it began. The press's focus fetches the collections,
  // and a box deleted meanwhile, gone before the release, moved the pressed one from under the pointer: the
  // tick was lost. The choices follow once the press is over (after its click).
  let pressing = false;
  let refreshWaits = false;
  // Only a primary press that can click: a right button's context menu may take its release. The window's
  // own blur (not captured: an element's blur, as the press moves the focus, is no end of it) ends it too.
  const ends = [["pointerup", true], ["pointercancel", true], ["contextmenu", true], ["blur", false]];
  picks.addEventListener("pointerdown", (down) => {
    if (!down.isPrimary || down.button !== 0 || pressing) return;
    pressing = true;
    const over = (event) => {
      if (event.pointerId !== undefined && event.pointerId !== down.pointerId) return;
      pressing = false;
      for (const [name, capture] of ends) window.removeEventListener(name, over, capture);
      setTimeout(() => {
        if (refreshWaits) refreshCollections();
      });
    };
    for (const [name, capture] of ends) window.addEventListener(name, over, capture);
  });

  // The choices as ctx.collections says now, in place: a box is its collection's (by id), so a tick follows
  // it renamed and one that has the focus keeps it; one deleted goes, one created comes.
  function refreshCollections() {
    refreshWaits = pressing;
    if (pressing) return;
    const shown = new Map([...picks.querySelectorAll("input")].map((input) => [input.dataset.id, input.closest("label")]));
    const ids = new Set(ctx.collections.map((c) => c.id));
    // The ones deleted go first: a box after one of them is not moved up (a move takes the focus away).
    for (const [id, label] of shown) if (!ids.has(id)) label.remove();
    const focused = picks.contains(document.activeElement) ? document.activeElement : null;
    const labels = ctx.collections.map((c) => {
      const label = shown.get(c.id) ?? h("label", { class: "check" }, h("input", { type: "checkbox", name: "collections", dataset: { id: c.id } }), h("span"));
      label.querySelector("input").value = c.name;
      label.querySelector("span").textContent = c.name;
      return label;
    });
    labels.forEach((label, i) => {
      if (picks.children[i] !== label) picks.insertBefore(label, picks.children[i] ?? null);
    });
    // A rename that changes the order moves boxes: the focused one gets its focus back.
    if (focused && document.activeElement !== focused) focused.focus({ preventScroll: true });
    syncPicks();
  }

  function showKey(made) {
    const value = h("code", { class: "key-value" }, made.key);
    const copy = h("button", { type: "button", class: "primary" }, "Copy");
    copy.addEventListener("click", async () => {
      await navigator.clipboard.writeText(made.key);
      toast("Key copied.");
    });
    const done = h("button", { type: "button", class: "quiet" }, "I have stored it");
    done.addEventListener("click", () => {
      reveal.hidden = true;
      clear(reveal);
    });
    clear(reveal).append(
      h("p", {}, h("strong", {}, `The key “${made.name}”`), ": shown this once (only its hash is kept). Store it now."),
      h("div", { class: "row" }, value, copy, done),
    );
    reveal.hidden = false;
    copy.focus();
  }

  // Entering the form (from outside it): the collections again, as other admins may have changed them since
  // (rag:collections then refreshes the choices).
  form.addEventListener("focusin", (event) => {
    if (!form.contains(event.relatedTarget)) ctx.reloadCollections().catch(() => {});
  });
  role.addEventListener("change", () => {
    scope.disabled = role.value === "admin";
  });
  every.addEventListener("change", syncPicks);
  // A choice made after a refusal: the refusal's sentence is about the choice before.
  scope.addEventListener("change", () => {
    formError.textContent = "";
  });
  // Revoked keys shown or not: another list, from its first page.
  showRevoked.addEventListener("change", () => (page > 1 ? navigate(keysHref(1)) : load()));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const json = { name: name.value.trim(), role: role.value };
    // By id: a tick is its collection's, renamed meanwhile by another admin too (its name: a 404).
    const ticked = every.checked ? [] : [...picks.querySelectorAll("input:checked")].map((i) => ({ id: i.dataset.id, name: i.value }));
    if (role.value !== "admin" && !every.checked) {
      if (!ticked.length) {
        formError.textContent = "Tick the collections the key reaches, or “Every collection, new ones too”.";
        every.focus();
        return;
      }
      json.collections = ticked.map((t) => t.id);
    }
    let made;
    try {
      made = await api("/keys", { method: "POST", json });
    } catch (err) {
      formError.textContent = err.message;
      // Deleted meanwhile: named (the server's sentence names the id), its box gone with the list fetched again.
      if (err instanceof ApiError && err.code === COLLECTION_NOT_FOUND) {
        await ctx.reloadCollections().catch(() => {});
        const gone = ticked.filter((t) => !ctx.collections.some((c) => c.id === t.id)).map((t) => `“${t.name}”`);
        if (gone.length) formError.textContent = `Deleted meanwhile, by another admin: ${gone.join(", ")}. Choose again.`;
      }
      return;
    }
    formError.textContent = "";
    form.reset();
    every.checked = true;
    syncPicks();
    if (ctx.status.auth === "open") {
      await ctx.adoptKey(made.key);
      openNote?.remove();
      role.disabled = false;
    }
    scope.disabled = role.value === "admin";
    showKey(made);
    await load();
  });

  refreshCollections();
  return {
    el,
    refreshCollections,
    // The page of keys the URL says (#/admin?page=N).
    show(route) {
      page = pageOf(route.query, PER);
      load();
    },
  };
}
