// Placeholder: replaced by the search view.
import { h } from "../dom.js";

export function mount(root) {
  root.append(h("h1", {}, "search"));
}
