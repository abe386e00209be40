// The chat view: the sessions sidebar (chat_sidebar.js), one conversation (chat_messages.js renders its
// messages) and the message box. The URL carries the session (#/chat/<id>) and, when the questions are
// about one document ("Ask about it" on its page), that document (?doc=<id>); a new chat gets its id from
// the first answer's `sources` event (a turn, asked and streamed: chat_turn.js). Stop (or leaving) aborts
// the request: the server then stores nothing, so the unanswered question leaves the conversation and goes
// back into the message box.

import { api, ApiError } from "../api.js";
import { announce, h, toast } from "../dom.js";
import { icon } from "../icons.js";
import { href, navigate } from "../router.js";
import { documentLimit, fromHistory, renderMessage } from "./chat_messages.js";
import { createDrawer } from "./chat_drawer.js";
import { createSidebar, sessionTitle } from "./chat_sidebar.js";
import { createTurns } from "./chat_turn.js";

const SEARCH_TYPES = [
  ["hybrid", "Hybrid"],
  ["bm25", "Keywords (BM25)"],
  ["vector", "Meaning (vector)"],
];
// The switch outlives a remount (a collection change): it is the person's choice for new chats.
let temporaryPreference = false;
// The message box's text, and a question sent but not answered yet, live as long as the tab: a reload,
// another view or another chat mid-answer does not lose them (sign-out forgets every rag.* key).
const DRAFT_KEY = "rag.chatDraft";
// The question being answered when the page was left. The server stores an answer that was complete
// before it saw the client go (an extractive one is at once): then the question is not put back.
const PENDING_KEY = "rag.chatPending";
const PENDING_NEW_KEY = "rag.chatPendingNew"; // set: the pending question's chat is new (stored once answered)

export function mount(root, ctx, route) {
  // sessionId: the session the next question goes to (null: a new chat); routeId: the id in the URL.
  // doc: the document every question is limited to ({id, filename, collection_id}), or null.
  const state = { sessionId: null, routeId: null, session: null, messages: [], stream: null, searchType: "hybrid", loads: 0, doc: null };
  let leftPending = null; // the question of PENDING_KEY, until the chat's history says whether it was answered

  // --- the parts ---------------------------------------------------------------------------------
  const sidebar = createSidebar({
    onNew: newChat,
    temporary: { get: () => temporaryPreference, set: setTemporary },
    currentId: () => state.sessionId,
    onPicked: () => drawer.set(false),
  });
  const drawer = createDrawer(root, sidebar.el);
  const title = h("h1", { class: "chat-title", id: "chat-title" }, "New chat");
  const tempBadge = h("span", { class: "badge temp-badge", hidden: true }, "Temporary");
  const docName = h("a", { class: "doc-scope-name" });
  const docScope = h(
    "span",
    { class: "doc-scope", hidden: true },
    h("span", { class: "muted" }, "About "),
    docName,
    h(
      "button",
      { type: "button", class: "quiet", "aria-label": "Ask about every document", onclick: () => navigate(chatHref(state.routeId, null)) },
      "×",
    ),
  );
  const modeSelect = h(
    "select",
    { id: "chat-search-type", "aria-label": "Search mode" },
    SEARCH_TYPES.map(([value, label]) => h("option", { value }, label)),
  );
  const log = h("div", { class: "messages", role: "log", "aria-live": "polite", "aria-busy": "false", "aria-labelledby": "chat-title", tabindex: "-1" });
  const thread = h("div", { class: "thread" });
  log.append(thread);
  const textarea = h("textarea", { id: "chat-message", dir: "auto", rows: "1", placeholder: "Ask about your documents…", autocomplete: "off", maxlength: 20000 });
  const sendButton = h("button", { type: "submit", class: "primary send", "aria-label": "Send" }, icon("send"), h("span", {}, "Send"));
  const stopButton = h("button", { type: "button", class: "stop", hidden: true, "aria-label": "Stop" }, icon("stop"), h("span", {}, "Stop"));
  const formError = h("p", { class: "form-error", role: "alert" });
  const form = h(
    "form",
    { class: "composer", "aria-label": "Ask" },
    h("label", { for: "chat-message", class: "visually-hidden" }, "Message"),
    h("div", { class: "composer-box" }, textarea, sendButton, stopButton),
    formError,
    h("p", { class: "composer-hint muted small" }, `Enter sends, Shift+Enter adds a line · collection “${ctx.collection}”`),
  );
  const conversation = h(
    "section",
    { class: "chat-main", "aria-labelledby": "chat-title" },
    h(
      "header",
      { class: "chat-head" },
      drawer.toggle,
      title,
      tempBadge,
      docScope,
      h("label", { class: "mode-select" }, h("span", {}, "Search mode"), modeSelect),
    ),
    log,
    form,
  );
  root.append(h("div", { class: "chat-layout" }, sidebar.el, drawer.backdrop, conversation));

  sidebar.el.addEventListener("session-changed", (event) => {
    if (event.detail.id !== state.sessionId) return;
    state.session = event.detail;
    drawHead();
  });

  // --- header and empty state ----------------------------------------------------------------------
  function isTemporary() {
    return state.session ? state.session.is_temporary : temporaryPreference;
  }

  // The header cuts a long title (one line, an ellipsis) like the sidebar: the whole of it shows on hover.
  function setTitle(text) {
    title.textContent = text;
    title.title = text;
  }

  function drawHead() {
    setTitle(state.session ? sessionTitle(state.session) : "New chat");
    tempBadge.hidden = !isTemporary();
    modeSelect.value = state.searchType;
    document.title = `${title.textContent} · rag-server`;
  }

  function emptyState() {
    const source = state.doc ? `“${state.doc.filename}” alone` : `the “${ctx.collection}” collection`;
    return h(
      "div",
      { class: "chat-empty" },
      h("h2", {}, isTemporary() ? "Temporary chat" : state.doc ? "Ask about this document" : "Ask about your documents"),
      h(
        "p",
        { class: "muted" },
        isTemporary()
          ? "Answered like any chat, but never stored: it is not listed and is gone when the server restarts."
          : `Answers come from ${source} and cite their passages: select a number to read the passage it comes from.`,
      ),
    );
  }

  // --- the document the questions are about ----------------------------------------------------------
  const chatHref = (id, docId) => href("chat", id, docId ? { doc: docId } : null);

  // The ?doc= of the URL: look the document up (its name for the header, its collection for the
  // questions). One that is gone says so and the chat goes on without it.
  let docReady = Promise.resolve(); // a question waits for the lookup: it must not go out unlimited
  let docInUrl = null;
  function setDoc(docId) {
    docInUrl = docId || null;
    docReady = docReady.then(() => lookUpDoc(docId));
  }

  async function lookUpDoc(docId) {
    if ((state.doc?.id ?? null) === (docId || null)) return;
    state.doc = null;
    if (docId) {
      try {
        const doc = await api(`/documents/${encodeURIComponent(docId)}`);
        state.doc = { id: doc.id, filename: doc.filename, collection_id: doc.collection_id };
      } catch (err) {
        formError.textContent =
          err instanceof ApiError && (err.status === 404 || err.status === 422)
            ? "The document this chat was asked to be about no longer exists: questions go to the whole collection."
            : err.message;
      }
    }
    docScope.hidden = !state.doc;
    if (state.doc) {
      docName.textContent = state.doc.filename;
      docName.title = state.doc.filename;
      docName.setAttribute("href", href("documents", state.doc.id));
    }
    // A new chat's empty state names the document (a stored chat draws its own when loaded).
    if (!state.routeId && !state.messages.length && !state.stream) drawThread();
  }

  function notice(heading, text) {
    thread.replaceChildren(
      h(
        "div",
        { class: "chat-empty", role: "status" },
        h("h2", {}, heading),
        h("p", { class: "muted" }, text),
        h("a", { href: href("chat"), class: "button-link" }, "Start a new chat"),
      ),
    );
  }

  function drawThread() {
    if (!state.messages.length) {
      thread.replaceChildren(emptyState());
      return;
    }
    // History goes in once, as one fragment: one layout for hundreds of messages.
    const fragment = document.createDocumentFragment();
    for (const m of state.messages) fragment.append(renderMessage(m));
    thread.replaceChildren(fragment);
    log.scrollTop = log.scrollHeight;
  }

  // --- sessions ------------------------------------------------------------------------------------
  function detachStream() {
    if (state.stream) {
      const { question } = state.stream;
      state.stream.detached = true;
      state.stream.controller.abort();
      state.stream = null;
      turns.setBusy(false);
      // Left before its answer: the server stored nothing, so the question goes back into the box.
      textarea.value = question + (textarea.value ? `\n${textarea.value}` : "");
      saveDraft();
    }
  }

  // What a reload would lose: the question being answered, then what is in the box.
  function saveDraft() {
    const draft = [state.stream?.question, textarea.value].filter((part) => part?.trim()).join("\n");
    if (draft) sessionStorage.setItem(DRAFT_KEY, draft);
    else sessionStorage.removeItem(DRAFT_KEY);
    if (state.stream) sessionStorage.setItem(PENDING_KEY, state.stream.question);
    else sessionStorage.removeItem(PENDING_KEY);
    if (state.stream?.createdSession) sessionStorage.setItem(PENDING_NEW_KEY, "1");
    else sessionStorage.removeItem(PENDING_NEW_KEY);
  }

  // A question put back in the box that the chat's stored history answers after all (left or stopped
  // just after its answer was complete): out of the box again, and no second ask of it.
  function dropAnswered(question) {
    const last = state.messages.at(-2);
    if (!question || last?.role !== "user" || last.content !== question || state.messages.at(-1)?.role !== "assistant") return false;
    const rest = textarea.value.startsWith(question) ? textarea.value.slice(question.length).replace(/^\n/, "") : textarea.value;
    textarea.value = rest;
    autosize();
    saveDraft();
    return true;
  }

  async function loadSession(id) {
    detachStream();
    const load = ++state.loads;
    state.sessionId = id;
    state.routeId = id;
    state.session = null;
    state.messages = [];
    formError.textContent = "";
    sidebar.markCurrent();
    if (!id) {
      state.searchType = "hybrid";
      drawHead();
      drawThread();
      return;
    }
    setTitle("Loading…");
    thread.replaceChildren(h("p", { class: "muted loading" }, "Loading the conversation…"));
    try {
      const path = encodeURIComponent(id);
      const [session, history] = await Promise.all([api(`/chat/sessions/${path}`), api(`/chat/history/${path}`)]);
      if (load !== state.loads) return;
      state.session = session;
      state.searchType = session.search_type;
      state.messages = history.messages.map(fromHistory);
      drawHead();
      drawThread();
      const answered = dropAnswered(leftPending);
      leftPending = null;
      if (answered) announce("Your last question was answered already: its answer is in the chat.");
      // Opened without its ?doc= (the list of chats, a bookmark): the limit of its last answer holds.
      const limit = docInUrl ? null : documentLimit(history.messages);
      if (limit) navigate(chatHref(id, limit), { replace: true });
    } catch (err) {
      if (load !== state.loads) return;
      // A new chat reloaded before its first answer: the server stored nothing, not even the id its sources
      // named. A new chat again, the question back in the box (the draft kept for a reload), and why.
      if (err instanceof ApiError && err.status === 404 && leftPending && pendingNew) {
        leftPending = null;
        loadSession(null);
        navigate(chatHref(null, state.doc?.id), { replace: true });
        formError.textContent = "The page was reloaded before its answer came, so this chat was not stored. Your question is back in the message box: send it again.";
        return;
      }
      // A question asked here starts a new chat.
      state.session = null;
      state.sessionId = null;
      sidebar.markCurrent();
      setTitle("Chat not found");
      if (err instanceof ApiError && (err.status === 404 || err.status === 422)) {
        notice("This chat does not exist", "It may have been deleted, or the link is wrong. Your other chats are in the list.");
      } else {
        notice("This chat could not be opened", err.message);
      }
    }
  }

  function newChat() {
    drawer.set(false);
    if (state.routeId) navigate(href("chat"));
    else loadSession(null);
    textarea.focus();
  }

  function setTemporary(value) {
    temporaryPreference = value;
    sidebar.setTemporary(value);
    // The switch is about the next chat: start one (a temporary chat is never mixed with a stored one).
    if (state.routeId) navigate(href("chat"));
    else {
      drawHead();
      drawThread();
    }
    announce(value ? "Temporary chat: it will not be stored." : "Chats are stored again.");
  }

  modeSelect.addEventListener("change", async () => {
    state.searchType = modeSelect.value;
    if (!state.session) return;
    try {
      state.session = await api(`/chat/sessions/${encodeURIComponent(state.session.id)}`, {
        method: "PATCH",
        json: { search_type: state.searchType },
      });
      toast(`Search mode: ${modeSelect.selectedOptions[0].textContent}.`);
    } catch (err) {
      toast(err.message, "error");
    }
  });

  // --- asking (chat_turn.js) ----------------------------------------------------------------------
  const turns = createTurns({
    ctx,
    state,
    sidebar,
    thread,
    log,
    textarea,
    formError,
    sendButton,
    stopButton,
    temporary: () => temporaryPreference,
    docReady: () => docReady,
    setLeftPending: (question) => (leftPending = question),
    drawHead,
    drawThread,
    isTemporary,
    loadSession,
    saveDraft,
    autosize,
    chatHref,
  });

  function autosize() {
    textarea.style.height = "auto";
    textarea.style.height = `${Math.min(textarea.scrollHeight, 240)}px`;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    turns.ask();
  });
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      turns.ask();
    }
  });
  textarea.addEventListener("input", () => {
    autosize();
    saveDraft();
  });
  stopButton.addEventListener("click", () => state.stream?.controller.abort());

  // --- life cycle ----------------------------------------------------------------------------------
  textarea.value = sessionStorage.getItem(DRAFT_KEY) || "";
  leftPending = sessionStorage.getItem(PENDING_KEY);
  const pendingNew = sessionStorage.getItem(PENDING_NEW_KEY) !== null; // leftPending began a new chat
  sessionStorage.removeItem(PENDING_KEY);
  sessionStorage.removeItem(PENDING_NEW_KEY);
  autosize();
  sidebar.refresh();
  loadSession(route.id);
  setDoc(route.query.get("doc"));

  return {
    update(next) {
      setDoc(next.query.get("doc"));
      // Our own replace (a new chat got its id): nothing to load.
      if (next.id === state.routeId) {
        sidebar.markCurrent();
        return;
      }
      loadSession(next.id);
    },
    unmount() {
      detachStream();
      turns.unmount();
      drawer.destroy();
      document.title = "rag-server";
    },
  };
}
