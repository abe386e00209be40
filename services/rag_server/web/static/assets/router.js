// Routes live in the URL's fragment (#/chat/<session>, #/documents?status=failed), so reload, back and
// forward work and no page path can shadow an API path.

export const VIEWS = ["chat", "documents", "search", "status", "admin"];

// A segment as typed; one that is not valid percent-encoding (a link cut short: "%E0%A4%A") stays as it is
// instead of throwing URIError, which left the app on "Loading…" or on the previous view.
function decodeSegment(segment) {
  try {
    return decodeURIComponent(segment || "");
  } catch {
    return segment;
  }
}

// {view, id, query}: `id` is the path segment after the view (a session or a document), or null.
export function parseRoute(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [path, qs = ""] = raw.split("?", 2);
  const [view, id] = path.split("/").map(decodeSegment);
  return {
    view: VIEWS.includes(view) ? view : "chat",
    id: id || null,
    query: new URLSearchParams(qs),
  };
}

export function href(view, id = null, query = null) {
  let path = `#/${view}`;
  if (id) path += `/${encodeURIComponent(id)}`;
  const qs = query ? new URLSearchParams(query).toString() : "";
  return qs ? `${path}?${qs}` : path;
}

// Go somewhere: a new history entry (back returns here), or `replace` the current one (no entry).
export function navigate(target, { replace = false } = {}) {
  if (replace) {
    history.replaceState(history.state, "", target);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  } else {
    location.hash = target;
  }
}
