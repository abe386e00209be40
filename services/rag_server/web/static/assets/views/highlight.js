// A search hit's text with the query's words marked where the server's BM25 could have matched them:
// compared folded as BM25 folds (migration 0027), each mark starting where a word starts.

import { h } from "../dom.js";
import { canonical } from "./document_common.js";

// Letters folded as BM25 folds them (migration 0027): a Latin letter loses its marks (NFD), these become
// ASCII letters; other scripts stay as they are. So "eleve" marks "élève" and "strasse" marks "Straße".
const FOLDED = { ß: "ss", æ: "ae", œ: "oe", þ: "th", ĳ: "ij", ø: "o", ł: "l", đ: "d", ð: "d", ħ: "h", ı: "i", ĸ: "q", ŀ: "l", ŉ: "n", ŋ: "n", ŧ: "t", ſ: "s" };
const LATIN_BASE = /^[a-zßæœþĳøłđðħıĸŀŉŋŧſ][\u0300-\u036f]*$/u;

function foldLetter(ch) {
  if (ch < "\u00c0") return ch;
  const decomposed = ch.normalize("NFD");
  if (!LATIN_BASE.test(decomposed)) return ch;
  return FOLDED[decomposed[0]] || decomposed[0];
}

// `text` lower-cased and folded, with where in `text` each of its characters came from.
function foldWithOffsets(text) {
  let folded = "";
  const from = [];
  const to = [];
  let at = 0;
  let afterLatin = false;
  for (const ch of text) {
    const mark = /^[\u0300-\u036f]$/u.test(ch);
    // A mark after a Latin letter (decomposed text) is part of it: it extends the letter, adds nothing.
    if (mark && afterLatin) {
      if (to.length) to[to.length - 1] = at + ch.length;
      at += ch.length;
      continue;
    }
    const f = [...ch.toLowerCase()].map(foldLetter).join("").replace(/(?<=[a-z])[\u0300-\u036f]+/gu, "");
    folded += f;
    // One entry per UTF-16 unit of `folded`, as match indexes count.
    for (let i = 0; i < f.length; i += 1) {
      from.push(at);
      to.push(at + ch.length);
    }
    afterLatin = LATIN_BASE.test(ch.toLowerCase().normalize("NFD"));
    at += ch.length;
  }
  return { folded, from, to };
}

// Chinese, Japanese and Korean characters: the server's CJK_CLASS (migration 0025), which BM25 reads
// one character (and pair) at a time. tests/unit/test_web_static.py keeps the two equal.
const CJK = "\\u3040-\\u30ff\\u3400-\\u4dbf\\u4e00-\\u9fff\\uf900-\\ufaff\\uac00-\\ud7af\\u{20000}-\\u{3134f}";
const STARTS_CJK = new RegExp(`^[${CJK}]`, "u");
// Where a word starts: BM25 matches whole words (tokens), never a piece inside one, so "strasse" must not
// mark the end of "Hauptstraße" (one token: BM25 did not find it there). A word starts after anything but
// a letter, a digit or a combining mark (those continue the word before: "FY2024", a Hindi vowel sign),
// or right after a CJK character (rag_bm25_text sets CJK runs apart: "使用Docker" holds the token
// "docker"). A query word that starts with a CJK character has no such rule: those scripts write no
// spaces, and BM25 reads each of their characters and pairs as a word, so 年假 is found, and marked, in
// the middle of 公司的年假政策. A mark may end inside a word: the English stemmer makes "vacation" find
// "vacations", and the stem's letters are marked there.
const WORD_START = `(?<=^|[^\\p{L}\\p{N}\\p{M}]|[${CJK}])`;
// A number is read as PostgreSQL's parser reads it: after a hyphen it is a signed number ("FY-2024" is
// `fy` and `-2024`, so "2024" does not match it), and a decimal is one word ("10.5": not "10", nor "5").
const NUMBER_START = `(?<=^|[^\\p{L}\\p{N}\\p{M}\\-.]|[${CJK}]|(?<!\\d)\\.)`;
const NUMBER_END = "(?!\\.\\d)";

// The text with the query's words marked: text nodes and <mark> elements only, never markup from a string.
// Words are compared folded, so a word typed without its accents marks the accented one, and the reverse.
export function highlighted(text, q) {
  const words = [...new Set((canonical(q).toLowerCase().match(/[\p{L}\p{N}]{2,}/gu) || []).map((w) => foldWithOffsets(w).folded))];
  if (!words.length) return [text];
  const escaped = words.map((w) => {
    const literal = w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    if (STARTS_CJK.test(w)) return literal;
    if (/^\p{N}/u.test(w)) return NUMBER_START + literal + (/\p{N}$/u.test(w) ? NUMBER_END : "");
    return WORD_START + literal + (/\p{N}$/u.test(w) ? NUMBER_END : "");
  });
  const pattern = new RegExp(escaped.join("|"), "gu");
  const { folded, from, to } = foldWithOffsets(text);
  const parts = [];
  let last = 0;
  for (const m of folded.matchAll(pattern)) {
    if (!m[0].length) continue;
    const start = from[m.index];
    const end = to[m.index + m[0].length - 1];
    if (start < last) continue;
    if (start > last) parts.push(text.slice(last, start));
    parts.push(h("mark", {}, text.slice(start, end)));
    last = end;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}
