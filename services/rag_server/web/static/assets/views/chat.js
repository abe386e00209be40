// Placeholder: replaced by the chat view.
import { h } from "../dom.js";

export function mount(root) {
  root.append(h("h1", {}, "chat"));
}
