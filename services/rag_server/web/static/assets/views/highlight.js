// A search hit's text with the words the query matched marked. The server says which (`highlight: true`:
// `highlights`, [start, end) offsets in code points), with the BM25 leg's own analyzer: its stemmer, its
// accent folding, its reading of numbers and CJK. A copy of those rules here could not follow the stemmer.

import { cutText, h } from "../dom.js";

const graphemes = typeof Intl.Segmenter === "function" ? new Intl.Segmenter(undefined, { granularity: "grapheme" }) : null;

// `at`, or the start of the character as a reader sees it (a grapheme) that `at` falls inside: a flag is two
// code points, a hand and its skin tone too, a Devanagari consonant and its vowel sign.
function graphemeStart(text, at) {
  const segment = graphemes?.segment(text).containing(at);
  return segment && segment.index < at ? segment.index : at;
}

// `text` cut to `limit` UTF-16 units (then `…`), never inside a character (a grapheme), with each span of
// `spans` inside it marked: text nodes and <mark> elements only, never markup from a string.
export function highlighted(text, spans, limit = Infinity) {
  // Code points to UTF-16 offsets: an emoji or a rare CJK character is one code point and two units.
  const units = [0];
  for (const ch of text) units.push(units[units.length - 1] + ch.length);
  // The cut within `limit`, at the start of the character it would fall inside (cutText keeps an emoji's
  // two halves together; graphemeStart a flag's or a vowel sign's code points).
  const cut = text.length > limit ? graphemeStart(text, cutText(text, limit).length) : text.length;
  const shown = cut < text.length ? text.slice(0, cut).trimEnd() : text;
  const parts = [];
  let last = 0;
  for (const [from, to] of spans || []) {
    const start = units[from];
    const end = Math.min(units[to] ?? text.length, shown.length);
    if (start === undefined || start < last || start >= end) continue;
    if (start > last) parts.push(shown.slice(last, start));
    // Touching the mark before it (CJK, marked character by character): one mark, one highlight read out.
    const previous = start === last ? parts.at(-1) : null;
    if (previous instanceof Element) previous.append(shown.slice(start, end));
    else parts.push(h("mark", {}, shown.slice(start, end)));
    last = end;
  }
  if (last < shown.length) parts.push(shown.slice(last));
  if (shown.length < text.length) parts.push("…");
  return parts;
}
