// The sessions sidebar: "New chat", the temporary-chat switch, the stored sessions most recently active
// first (their last question, not a rename or an archive; paged),
// the Archived section (its own paged list), inline rename, archive/unarchive and delete; the search box
// (GET /chat/sessions?q=: words beginning words of a title or of a message) narrows both lists.

import { api, download } from "../api.js";
import { confirmDialog, h, timeNode, toast } from "../dom.js";
import { icon } from "../icons.js";
import { href, navigate } from "../router.js";

const PAGE = 30;
const MAX_PAGE = 200; // the API's largest (GET /chat/sessions?limit=)
const SEARCH_MAX = 200; // the API's longest q
const SEARCH_MS = 300; // typing pauses this long: the lists are searched
// A search needs a word (a letter or a digit): punctuation alone (`!!!`) matches no chat, without asking the
// API, which refuses it (422, naming its parameter `q`: a red toast for what is simply no match).
const HAS_WORD = /[\p{L}\p{N}]/u;

export function sessionTitle(session) {
  return session?.title || "New chat";
}

// One paged list of sessions (active or archived) inside `container`.
function sessionList({ label, archived, emptyText, owner }) {
  const list = h("ul", { class: "session-list", "aria-label": label });
  const more = h("button", { type: "button", class: "quiet load-more", hidden: true }, "Load more");
  const empty = h("p", { class: "muted small session-empty", hidden: true }, emptyText);
  const state = { sessions: [], total: 0, loaded: false, q: "" };
  let latest = 0; // the newest reload: an older one's answer (another search) is not shown over it

  async function fetchPage(offset, limit) {
    const query = { limit, offset, only_archived: archived ? "true" : undefined, q: state.q || undefined };
    return api("/chat/sessions", { query });
  }

  function draw() {
    list.replaceChildren(...state.sessions.map((s) => owner.row(s, archived)));
    more.hidden = state.sessions.length >= state.total;
    empty.hidden = state.sessions.length > 0;
    empty.textContent = state.q ? "No chats match." : emptyText;
  }

  // Another search: the list starts again from its first page.
  function search(q) {
    if (q === state.q) return false;
    state.q = q;
    state.sessions = [];
    state.loaded = false;
    return true;
  }

  async function reload() {
    // Keep as many rows as were shown: a refresh after an answer must not collapse a paged list. The API
    // gives at most 200 a page (a list loaded to 500 fell back to 200): as many pages as it takes. A list
    // shown whole stays whole (a new chat on top must not push its last row out behind "Load more").
    const whole = state.loaded && state.sessions.length >= state.total;
    const wanted = whole ? Infinity : Math.max(PAGE, state.sessions.length);
    // Paged by the rows fetched, not those kept: a chat started or answered elsewhere meanwhile shifts the
    // list down, a row comes twice and is kept once, and paging by the rows kept asked for that row again,
    // forever. Each row that came twice stands for one that went to the top after it was read: the top
    // again, that many.
    const mine = ++latest;
    if (state.q && !HAS_WORD.test(state.q)) {
      state.sessions = [];
      state.total = 0;
      state.loaded = true;
      draw();
      return;
    }
    try {
      const sessions = [];
      const known = new Set();
      let offset = 0;
      let page;
      do {
        page = await fetchPage(offset, Math.min(MAX_PAGE, wanted - sessions.length));
        offset += page.sessions.length;
        for (const s of page.sessions) {
          if (!known.has(s.id)) sessions.push(s);
          known.add(s.id);
        }
      } while (page.sessions.length && offset < page.total && sessions.length < wanted);
      const twice = offset - sessions.length;
      if (twice > 0) {
        const top = await fetchPage(0, Math.min(MAX_PAGE, twice));
        sessions.unshift(...top.sessions.filter((s) => !known.has(s.id)));
      }
      if (mine !== latest) return;
      state.sessions = sessions;
      state.total = page.total;
      state.loaded = true;
      draw();
    } catch (err) {
      toast(err.message, "error");
    }
  }

  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const q = state.q;
      const page = await fetchPage(state.sessions.length, PAGE);
      if (q !== state.q) return; // searched meanwhile: that search's rows are on show
      const known = new Set(state.sessions.map((s) => s.id));
      state.sessions.push(...page.sessions.filter((s) => !known.has(s.id)));
      state.total = page.total;
      draw();
      // Focus stays useful: on the first new row, else where the button was.
      list.children[state.sessions.length - page.sessions.length]?.querySelector("a")?.focus();
    } catch (err) {
      toast(err.message, "error");
    } finally {
      more.disabled = false;
    }
  });

  return { list, more, empty, state, reload, draw, search };
}

// `onNew()` starts a new chat; `temporary` is {get(), set(bool)}; `currentId()` the shown session.
export function createSidebar({ onNew, temporary, currentId, onPicked }) {
  const owner = { row: null };
  const active = sessionList({ label: "Chats", archived: false, emptyText: "No chats yet.", owner });
  const archived = sessionList({ label: "Archived chats", archived: true, emptyText: "Nothing archived.", owner });

  const newButton = h("button", { type: "button", class: "primary new-chat" }, icon("plus"), "New chat");
  newButton.addEventListener("click", () => onNew());
  const toggle = h("input", { type: "checkbox", role: "switch", id: "temporary-chat", checked: temporary.get() });
  toggle.addEventListener("change", () => temporary.set(toggle.checked));
  const archivedSection = h(
    "details",
    { class: "archived" },
    h("summary", {}, "Archived"),
    archived.list,
    archived.empty,
    archived.more,
  );
  archivedSection.addEventListener("toggle", () => {
    if (archivedSection.open) archived.reload();
  });

  // Searched once typing pauses; Escape clears it (the box's own clear button too).
  const searchBox = h("input", {
    type: "search",
    id: "chat-search",
    class: "session-search",
    placeholder: "Search chats",
    maxlength: String(SEARCH_MAX),
    autocomplete: "off",
    title: "Chats whose title or messages have words beginning with each of these",
  });
  let searchTimer = null;
  const runSearch = () => {
    clearTimeout(searchTimer);
    const q = searchBox.value.trim();
    const changed = [active, archived].map((list) => list.search(q));
    if (changed.some(Boolean)) refresh();
  };
  searchBox.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, SEARCH_MS);
  });
  searchBox.addEventListener("keydown", (event) => {
    if (event.key === "Enter") runSearch();
    if (event.key === "Escape" && searchBox.value) {
      event.preventDefault();
      event.stopPropagation();
      searchBox.value = "";
      runSearch();
    }
  });

  const el = h(
    "aside",
    { class: "chat-sidebar", id: "chat-sidebar", "aria-label": "Chat sessions" },
    h("div", { class: "sidebar-top" }, newButton, h("label", { class: "switch", for: "temporary-chat" }, toggle, h("span", {}, "Temporary chat"))),
    h("label", { class: "visually-hidden", for: "chat-search" }, "Search chats"),
    searchBox,
    h("h2", { class: "sidebar-heading" }, "Chats"),
    active.list,
    active.empty,
    active.more,
    archivedSection,
  );

  function startRename(item, session, link) {
    const input = h("input", {
      type: "text",
      class: "rename-input",
      value: session.title || "",
      maxlength: 200,
      "aria-label": "Chat title",
    });
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (save && title && title !== session.title) {
        try {
          const updated = await api(`/chat/sessions/${encodeURIComponent(session.id)}`, { method: "PATCH", json: { title } });
          el.dispatchEvent(new CustomEvent("session-changed", { detail: updated }));
          // Redrawn: the row's buttons are named after the title.
          await refresh();
          el.querySelector(`.session-item[data-id="${CSS.escape(session.id)}"] .session-link`)?.focus();
          return;
        } catch (err) {
          toast(err.message, "error");
        }
      }
      input.replaceWith(link);
      link.focus();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
    link.replaceWith(input);
    input.focus();
    input.select();
  }

  // Where the keyboard focus goes once a row left its list (deleted, archived, restored): the row now in
  // its place, else the one above, else "New chat"; not the top of the page, where it fell with the row.
  function rowPlace(session) {
    const item = el.querySelector(`.session-item[data-id="${CSS.escape(session.id)}"]`);
    return item ? { list: item.parentElement, index: [...item.parentElement.children].indexOf(item) } : null;
  }
  function focusNear(place) {
    const links = place ? place.list.querySelectorAll(".session-link") : [];
    (links[Math.min(place?.index ?? 0, links.length - 1)] || newButton).focus();
  }

  async function setArchived(session, value) {
    const place = rowPlace(session);
    try {
      await api(`/chat/sessions/${encodeURIComponent(session.id)}`, { method: "PATCH", json: { is_archived: value } });
      toast(value ? `Archived “${sessionTitle(session)}”.` : `Restored “${sessionTitle(session)}”.`);
      await refresh();
      focusNear(place);
      if (value) archivedSection.open = true;
    } catch (err) {
      toast(err.message, "error");
    }
  }

  async function remove(session) {
    const place = rowPlace(session);
    const ok = await confirmDialog(`Delete “${sessionTitle(session)}”? Its messages are deleted too; this cannot be undone.`);
    if (!ok) return;
    try {
      await api(`/chat/sessions/${encodeURIComponent(session.id)}`, { method: "DELETE" });
      toast(`Deleted “${sessionTitle(session)}”.`);
      if (currentId() === session.id) navigate(href("chat"), { replace: true });
      await refresh();
      focusNear(place);
    } catch (err) {
      toast(err.message, "error");
    }
  }

  // The conversation with its sources, as the server writes it (a file named after the title).
  async function exportChat(session) {
    try {
      await download(`/chat/sessions/${encodeURIComponent(session.id)}/export`, "chat.md");
    } catch (err) {
      toast(err.message, "error");
    }
  }

  owner.row = (session, isArchived) => {
    const name = sessionTitle(session);
    const link = h(
      "a",
      // The sidebar cuts a long title (one line, an ellipsis): the whole of it shows on hover.
      { class: "session-link", href: href("chat", session.id), title: name, "aria-current": currentId() === session.id ? "page" : null },
      h("span", { class: "session-title" }, name),
      h("span", { class: "session-date" }, timeNode(session.last_active_at)),
    );
    link.addEventListener("click", () => onPicked());
    const item = h("li", { class: "session-item", dataset: { id: session.id } }, link);
    const button = (label, text, action) => {
      const b = h("button", { type: "button", class: "icon-button", "aria-label": `${label} “${name}”`, title: label }, text);
      b.addEventListener("click", action);
      return b;
    };
    item.append(
      h(
        "div",
        { class: "session-actions" },
        button("Rename", icon("pencil"), () => startRename(item, session, link)),
        button("Export as Markdown", icon("download"), () => exportChat(session)),
        isArchived
          ? button("Unarchive", icon("unarchive"), () => setArchived(session, false))
          : button("Archive", icon("archive"), () => setArchived(session, true)),
        button("Delete", icon("trash"), () => remove(session)),
      ),
    );
    return item;
  };

  async function refresh() {
    await Promise.all([active.reload(), archivedSection.open ? archived.reload() : null]);
  }

  function markCurrent() {
    for (const link of el.querySelectorAll(".session-link")) {
      const id = link.closest(".session-item").dataset.id;
      if (id === currentId()) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  return {
    el,
    refresh,
    markCurrent,
    setTemporary(value) {
      toggle.checked = value;
    },
  };
}
