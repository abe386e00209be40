// Placeholder: the safe markdown renderer.
export function renderMarkdown(text) {
  const p = document.createElement("p");
  p.textContent = text;
  return p;
}
