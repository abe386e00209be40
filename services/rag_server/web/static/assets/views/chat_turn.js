// A chat's turns: a question asked, its answer streamed in (drawn at most once per animation frame), and
// what a turn that did not end leaves behind (Stop, a chat deleted meanwhile, the stream cut off: the
// question goes back into the message box). `view` is the chat view's state, parts and helpers (chat.js).

import { api, ApiError, COLLECTION_NOT_FOUND, streamEvents } from "../api.js";
import { announce } from "../dom.js";
import { navigate } from "../router.js";
import { fromHistory, renderAnswerBody, renderAnswerFooter, renderMessage } from "./chat_messages.js";
import { documentExists } from "./document_common.js";

export function createTurns(view) {
  const { ctx, state, sidebar, thread, log, textarea, formError, sendButton, stopButton } = view;
  const { drawHead, drawThread, isTemporary, loadSession, saveDraft, autosize, chatHref } = view;
  function setBusy(busy) {
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
    log.setAttribute("aria-busy", String(busy));
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 120;
  }

  let frame = 0;
  function scheduleAnswerDraw() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      const answer = state.stream?.answer;
      if (!answer?.nodes) return;
      const stick = nearBottom();
      renderAnswerBody(answer.nodes.body, answer);
      if (stick) log.scrollTop = log.scrollHeight;
    });
  }

  async function ensureTemporarySession() {
    const session = await api("/chat/sessions", {
      method: "POST",
      json: { is_temporary: true, search_type: state.searchType },
    });
    state.session = session;
    state.sessionId = session.id;
    replaceUrl(session.id);
    return session.id;
  }

  // The URL follows the conversation without a new history entry (and without a reload: update() sees it).
  function replaceUrl(id) {
    state.routeId = id;
    navigate(chatHref(id, state.doc?.id), { replace: true });
  }

  // Take the unanswered turn out again: the server stored nothing for it.
  function undoTurn(stream) {
    stream.userNode.remove();
    stream.answer.nodes.article.remove();
    state.messages.splice(state.messages.indexOf(stream.user), 2);
    if (!state.messages.length) drawThread();
    textarea.value = stream.question + (textarea.value ? `\n${textarea.value}` : "");
    autosize();
    saveDraft();
    if (stream.createdSession && !state.session) {
      // The id the `sources` event named was never stored: back to a new chat.
      state.sessionId = null;
      replaceUrl(null);
    }
  }

  async function ask() {
    await view.docReady();
    const question = textarea.value.trim();
    if (!question || state.stream) return;
    formError.textContent = "";
    let sessionId = state.sessionId;
    if (!sessionId && view.temporary()) {
      try {
        sessionId = await ensureTemporarySession();
      } catch (err) {
        formError.textContent = err.message;
        return;
      }
    }
    const user = { role: "user", content: question };
    const answer = { role: "assistant", content: "", sources: [], streaming: true };
    if (!state.messages.length) thread.replaceChildren();
    if (!state.session) drawHead();
    state.messages.push(user, answer);
    const userNode = renderMessage(user);
    thread.append(userNode, renderMessage(answer));
    log.scrollTop = log.scrollHeight;
    textarea.value = "";
    autosize();
    const stream = { controller: new AbortController(), question, user, answer, userNode, createdSession: !sessionId, detached: false };
    state.stream = stream;
    saveDraft();
    setBusy(true);
    const body = { query: question, session_id: sessionId, search_type: state.searchType, collections: [ctx.collection] };
    if (state.doc) Object.assign(body, { collections: [state.doc.collection_id], filters: { document_ids: [state.doc.id] } });
    let done = null;
    try {
      for await (const { event, data } of streamEvents("/query/stream", body, stream.controller.signal)) {
        if (event === "sources") {
          answer.sources = data.sources;
          if (!state.sessionId) {
            state.sessionId = data.session_id;
            replaceUrl(data.session_id);
          }
        } else if (event === "token") answer.content += data.text;
        else if (event === "done") done = data;
        else if (event === "error") throw new ApiError(0, data.detail);
        scheduleAnswerDraw();
      }
      if (!done) throw new ApiError(0, "The answer was cut off before it was complete; nothing was stored.");
    } catch (err) {
      if (stream.detached) return;
      state.stream = null;
      setBusy(false);
      undoTurn(stream);
      if (err.name === "AbortError") {
        announce("Stopped. Your question is back in the message box.");
        // A new chat's id is asked after by the list of chats, which shows it if it was stored.
        if (!stream.createdSession) settleStopped(state.sessionId, stream.question);
      }
      else if (err instanceof ApiError && err.status === 404 && !stream.createdSession && err.code !== COLLECTION_NOT_FOUND) {
        // The chat was deleted meanwhile (another tab): the question can start a new one instead. Not a
        // collection gone (renamed or deleted elsewhere): the app follows it (rag:collection-missing) and
        // this chat, still there, stays open.
        loadSession(null);
        replaceUrl(null);
        sidebar.refresh();
        formError.textContent = "This chat no longer exists: it was deleted, perhaps in another tab. Your question is back in the message box: send it to start a new chat.";
      } else formError.textContent = err.message;
      textarea.focus();
      return;
    }
    if (stream.detached) return;
    state.stream = null;
    saveDraft();
    Object.assign(answer, {
      content: done.answer,
      mode: done.answer_mode,
      llmError: done.llm_error || null,
      condensedQuery: done.condensed_query || null,
      streaming: false,
    });
    renderAnswerBody(answer.nodes.body, answer);
    renderAnswerFooter(answer.nodes.footer, answer);
    setBusy(false);
    announce(`Answer ready${answer.mode === "extractive" ? " (extractive)" : ""}.`);
    if (state.doc && !answer.sources?.length && !(await documentExists(state.doc.id))) formError.textContent = `“${state.doc.filename}” no longer exists (deleted, perhaps in another tab): remove it (×) above to ask about every document.`;
    await afterAnswer(done.session_id);
  }

  // Stopped just after the answer was complete: the server stored it. The chat shows it then, and the
  // question leaves the box again.
  async function settleStopped(sessionId, question) {
    try {
      const history = await api(`/chat/history/${encodeURIComponent(sessionId)}`);
      const messages = history.messages.map(fromHistory);
      // One turn more than shown, and it is this question (not the same question asked earlier).
      const stored = messages.length === state.messages.length + 2 && messages.at(-2)?.content === question;
      if (state.sessionId !== sessionId || state.stream || !stored) return;
      view.setLeftPending(question);
      await loadSession(sessionId);
      replaceUrl(sessionId);
      sidebar.refresh();
    } catch {
      /* nothing stored, or the server away: the question stays in the box */
    }
  }

  async function afterAnswer(sessionId) {
    try {
      const session = await api(`/chat/sessions/${encodeURIComponent(sessionId)}`);
      if (state.sessionId !== sessionId) return;
      state.session = session;
      drawHead();
    } catch {
      /* the session was deleted meanwhile: the list below says so */
    }
    if (!isTemporary()) await sidebar.refresh();
  }

  return {
    ask,
    setBusy,
    unmount() {
      if (frame) cancelAnimationFrame(frame);
    },
  };
}
