// Placeholder: replaced by the documents view.
import { h } from "../dom.js";

export function mount(root) {
  root.append(h("h1", {}, "documents"));
}
