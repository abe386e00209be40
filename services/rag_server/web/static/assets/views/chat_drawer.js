// Below 760 px the sessions sidebar is a drawer: a toggle button in the chat's header, a backdrop that
// closes it, Escape closes it too, and so does the focus leaving it. A closed drawer is inert: out of the
// tab order and the accessibility tree.

import { h } from "../dom.js";
import { icon } from "../icons.js";

const NARROW = window.matchMedia("(max-width: 760px)");

// `root` gets the class drawer-open; `panel` is the sidebar element (its id is the toggle's target).
export function createDrawer(root, panel) {
  const toggle = h(
    "button",
    { type: "button", class: "icon-button drawer-toggle", "aria-label": "Show chats", "aria-controls": panel.id, "aria-expanded": "false" },
    icon("menu"),
  );
  const backdrop = h("div", { class: "drawer-backdrop", "aria-hidden": "true" });

  function set(open) {
    root.classList.toggle("drawer-open", open);
    toggle.setAttribute("aria-expanded", String(open));
    toggle.setAttribute("aria-label", open ? "Hide chats" : "Show chats");
    panel.inert = NARROW.matches && !open;
    if (open) panel.querySelector("button, a")?.focus();
  }
  const isOpen = () => root.classList.contains("drawer-open");
  toggle.addEventListener("click", () => set(!isOpen()));
  backdrop.addEventListener("click", () => set(false));
  const onKey = (event) => {
    // A dialog above the drawer takes its own Escape.
    if (event.key === "Escape" && isOpen() && !document.querySelector("dialog[open]")) {
      set(false);
      toggle.focus();
    }
  };
  const onResize = () => set(false);
  // Tab out of the open drawer closes it: the focus went on to the chat behind its backdrop, where what had
  // the focus could not be seen. A dialog opened from the drawer (deleting a chat) keeps it open.
  panel.addEventListener("focusout", (event) => {
    const next = event.relatedTarget;
    if (!isOpen() || !NARROW.matches || !next || panel.contains(next) || next.closest("dialog")) return;
    set(false);
  });
  document.addEventListener("keydown", onKey);
  NARROW.addEventListener("change", onResize);
  set(false);

  return {
    toggle,
    backdrop,
    set,
    destroy() {
      document.removeEventListener("keydown", onKey);
      NARROW.removeEventListener("change", onResize);
    },
  };
}
