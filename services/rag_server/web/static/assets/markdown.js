// Markdown to DOM nodes, never through an HTML parser: every piece of text becomes a text node, so raw
// HTML in an answer (or in a quoted document) stays literal text. Supported: paragraphs (a single newline
// is a line break), headings, emphasis, strikethrough, inline and fenced code, lists (nested by
// indentation), blockquotes, rules, links (only URLs safeUrl accepts, opened with rel="noopener
// noreferrer"; any other link stays literal text) and citations `[n]` / `[n, m]` handed to
// `options.citation(n)`, which returns a node (or null to keep the text).

import { h, safeUrl } from "./dom.js";

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;

// One regex for every inline construct; the first group that matched says which.
const INLINE = new RegExp(
  [
    /\\([\\`*_{}[\]()#+\-.!~>|])/.source, // 1 escaped character
    /(`+)([^`]|[^`][\s\S]{0,498}?[^`])\2(?!`)/.source, // 2,3 code span (500 characters at most, as chat/citations.py)
    /\[([^\][]+)\]\(\s*([^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+"[^"]*")?\s*\)/.source, // 4,5 link
    /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/.source, // 6 citation(s)
    /\*\*(?=\S)([\s\S]*?\S)\*\*/.source, // 7 strong
    /(?<![\w])__(?=\S)([\s\S]*?\S)__(?![\w])/.source, // 8 strong
    /\*(?=[^\s*])([\s\S]*?[^\s*])\*/.source, // 9 emphasis
    /(?<![\w])_(?=[^\s_])([\s\S]*?[^\s_])_(?![\w])/.source, // 10 emphasis
    /~~(?=\S)([\s\S]*?\S)~~/.source, // 11 strikethrough
    /<(https?:\/\/[^\s<>]+)>/.source, // 12 autolink
    /(https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"*_\]])/.source, // 13 bare URL
  ].join("|"),
  "g",
);

function link(url, children) {
  return h("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, children);
}

// Inline text to nodes. `options.citation(n)` turns [n] into a node.
export function renderInline(text, options = {}) {
  const out = [];
  let last = 0;
  const push = (s) => s && out.push(document.createTextNode(s));
  for (const m of text.matchAll(INLINE)) {
    push(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1] !== undefined) push(m[1]);
    else if (m[3] !== undefined) out.push(h("code", {}, m[3].replace(/^ (.*) $/, "$1")));
    else if (m[4] !== undefined) {
      const url = safeUrl(m[5]);
      // A link to anything else (javascript:, data:...) is shown as the text it was: inert.
      if (url) out.push(link(url, renderInline(m[4], options)));
      else push(m[0]);
    } else if (m[6] !== undefined) {
      const numbers = m[6].split(",").map((s) => Number(s.trim()));
      const nodes = options.citation ? numbers.map((n) => options.citation(n)) : [];
      if (nodes.length && nodes.every(Boolean)) out.push(...nodes);
      else push(m[0]);
    } else if (m[7] !== undefined || m[8] !== undefined) out.push(h("strong", {}, renderInline(m[7] ?? m[8], options)));
    else if (m[9] !== undefined || m[10] !== undefined) out.push(h("em", {}, renderInline(m[9] ?? m[10], options)));
    else if (m[11] !== undefined) out.push(h("del", {}, renderInline(m[11], options)));
    else {
      const url = safeUrl(m[12] ?? m[13]);
      if (url) out.push(link(url, url));
      else push(m[0]);
    }
  }
  push(text.slice(last));
  return out;
}

// A paragraph's lines: a single newline is a line break (answers are often written line by line).
function paragraph(lines, options) {
  const p = h("p");
  lines.forEach((line, i) => {
    if (i) p.append(h("br"));
    p.append(...renderInline(line.trim(), options));
  });
  return p;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function parseList(lines, start, options) {
  const first = ITEM.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const indent = first[1].length;
  const list = h(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) list.setAttribute("start", String(parseInt(first[2], 10)));
  let i = start;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const body = [m[3]];
    i += 1;
    // The item goes on while lines are indented deeper than its marker (or blank inside it).
    while (i < lines.length) {
      const line = lines[i];
      const deeper = line.length - line.trimStart().length > indent;
      if (line.trim() === "") {
        if (i + 1 < lines.length && lines[i + 1].length - lines[i + 1].trimStart().length > indent) {
          body.push("");
          i += 1;
          continue;
        }
        break;
      }
      if (!deeper && (ITEM.test(line) || startsBlock(line))) break;
      body.push(deeper ? line.slice(Math.min(indent + 2, line.length - line.trimStart().length)) : line);
      i += 1;
    }
    const li = h("li");
    const blocks = renderBlocks(body, options);
    // A tight item ("- text") holds its text directly, not a paragraph.
    if (blocks.length && blocks[0].tagName === "P") {
      li.append(...blocks[0].childNodes, ...blocks.slice(1));
    } else li.append(...blocks);
    list.append(li);
    while (i < lines.length && lines[i].trim() === "" && i + 1 < lines.length && ITEM.test(lines[i + 1])) {
      const next = ITEM.exec(lines[i + 1]);
      if (next[1].length !== indent) break;
      i += 1;
    }
  }
  return [list, i];
}

function renderBlocks(lines, options) {
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") {
      i += 1;
      continue;
    }
    let m;
    if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i += 1;
      // An unclosed fence (an answer still streaming) runs to the end.
      while (i < lines.length && !(lines[i].trim().startsWith(fence[0].repeat(fence.length)) && lines[i].trim().replace(/[`~]/g, "") === "")) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1;
      const code = h("code", m[2] ? { class: `language-${m[2]}`, "data-language": m[2] } : {}, body.join("\n"));
      blocks.push(h("pre", {}, code));
    } else if ((m = HEADING.exec(line))) {
      // An answer's headings sit under the page's own: h3..h6.
      blocks.push(h(`h${Math.min(6, m[1].length + 2)}`, {}, renderInline(m[2], options)));
      i += 1;
    } else if (RULE.test(line)) {
      blocks.push(h("hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        body.push(m[1]);
        i += 1;
      }
      blocks.push(h("blockquote", {}, renderBlocks(body, options)));
    } else if (ITEM.test(line)) {
      const [list, next] = parseList(lines, i, options);
      blocks.push(list);
      i = next;
    } else {
      const body = [];
      while (i < lines.length && lines[i].trim() !== "" && (body.length === 0 || !startsBlock(lines[i]))) {
        body.push(lines[i]);
        i += 1;
      }
      blocks.push(paragraph(body, options));
    }
  }
  return blocks;
}

// The whole text as a fragment of block elements.
export function renderMarkdown(text, options = {}) {
  const fragment = document.createDocumentFragment();
  fragment.append(...renderBlocks(String(text ?? "").replace(/\r\n?/g, "\n").split("\n"), options));
  return fragment;
}
