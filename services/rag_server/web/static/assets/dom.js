// Building the page from data without ever parsing it as HTML: every string becomes a text node or an
// attribute value, so a document, a model or the server cannot inject markup or script. No script of this
// app parses a string as HTML or code (tests/unit/test_web_static.py lists the forbidden APIs).

const SAFE_URL = /^(https?:|blob:|#|\/(?!\/)|\.\/|mailto:)/i;

// A URL that is safe to put in href/src: http(s), blob, same-page or same-origin paths; else null.
export function safeUrl(url) {
  const text = String(url ?? "").trim();
  return SAFE_URL.test(text) ? text : null;
}

// h("button", {class: "x", onclick: fn, "aria-label": "Close"}, "text", child, [more])
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "href" || name === "src") {
      const url = safeUrl(value);
      if (url) el.setAttribute(name, url);
    } else if (name === "value" || name === "checked" || name === "disabled" || name === "selected") {
      el[name] = value;
    } else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// Say something to screen readers without moving focus.
export function announce(message) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  // A new text node on the next frame: the same message twice is still announced.
  requestAnimationFrame(() => (region.textContent = message));
}

// The focus after a row of `tbody` went (deleted, revoked) and the list was drawn again: on `selector` (the
// same action, else the row's first button) of the row now at `index`, else of the nearest row after or
// before it that has one, else on `fallback` (the list's heading). It fell on the page's body with the
// removed button, and a keyboard user started again from the top of the page.
export function focusNear(tbody, index, selector, fallback) {
  const rows = [...tbody.rows];
  const action = (row) => row.querySelector(selector) ?? row.querySelector("button");
  const order = [...rows.slice(index), ...rows.slice(0, index).reverse()];
  (order.map(action).find(Boolean) ?? fallback).focus();
}

// The index of the row of `tbody` whose data-name is `name` (-1: none).
export const rowIndex = (tbody, name) => [...tbody.rows].findIndex((row) => row.dataset.name === name);

// A short message at the bottom of the screen; kind: "info" | "error".
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast toast-${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

// Show a <dialog> modally, in the body, until it closes. The browser's Back (or any other change of the
// URL) closes it too: it stayed open over the page Back led to, where "Delete" still deleted.
export function showModal(dialog) {
  const closeOnNavigation = () => dialog.close();
  window.addEventListener("hashchange", closeOnNavigation);
  dialog.addEventListener("close", () => window.removeEventListener("hashchange", closeOnNavigation), { once: true });
  document.body.append(dialog);
  dialog.showModal();
}

// A modal confirmation (native <dialog>: focus is trapped and Escape cancels). Resolves true/false;
// closed any other way than by its confirm button (Escape, Back) is false.
export function confirmDialog(message, confirmLabel = "Delete") {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-label": "Confirm" },
      h("p", {}, message),
      h(
        "form",
        { method: "dialog", class: "row end" },
        h("button", { value: "cancel", class: "quiet" }, "Cancel"),
        h("button", { value: "confirm", class: "danger" }, confirmLabel),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "confirm");
      dialog.remove();
    });
    showModal(dialog);
  });
}

const UNITS = ["B", "KB", "MB", "GB"];
export function formatBytes(n) {
  let value = Number(n) || 0;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${UNITS[unit]}`;
}

// Times and dates: one style on every page, in the browser's time zone, the same whatever its language
// (three pages wrote them three ways: a 12-hour clock, a 24-hour one, the locale's whole date and time).
// Shown: `HH:MM` today (`HH:MM:SS` with `seconds`), `Mon D` this year, `YYYY-MM-DD` before; the full
// `YYYY-MM-DD HH:MM:SS` on hover (title), and the exact instant in <time datetime>.
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const pad = (n) => String(n).padStart(2, "0");
const asDate = (value) => {
  const date = value instanceof Date ? value : new Date(value);
  return value === null || value === undefined || Number.isNaN(date.getTime()) ? null : date;
};
const ymd = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
const hm = (d, seconds) => `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? `:${pad(d.getSeconds())}` : ""}`;

// The full date and time ("2026-12-07 22:14:05"); "" for no date.
export function fullTime(value) {
  const d = asDate(value);
  return d ? `${ymd(d)} ${hm(d, true)}` : "";
}

// The short form of the page ("22:14", "Dec 7", "2025-03-04"); "" for no date.
export function formatTime(value, { seconds = false, now = new Date() } = {}) {
  const d = asDate(value);
  if (!d) return "";
  if (ymd(d) === ymd(now)) return hm(d, seconds);
  return d.getFullYear() === now.getFullYear() ? `${MONTHS[d.getMonth()]} ${d.getDate()}` : ymd(d);
}

// <time> of `value` in the short form, the full one on hover; null for no date.
export function timeNode(value, { seconds = false, ...props } = {}) {
  const d = asDate(value);
  return d ? h("time", { datetime: d.toISOString(), title: fullTime(d), ...props }, formatTime(d, { seconds })) : null;
}

export function formatMs(ms) {
  return `${Number(ms).toFixed(ms < 10 ? 1 : 0)} ms`;
}

// "1 document", "2 documents": the count with its word.
export const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

// `text` cut to at most `max` UTF-16 units (an API's limit), never between an emoji's two halves: a lone
// half is not valid Unicode, and the API refuses it (422).
export function cutText(text, max) {
  if (text.length <= max) return text;
  const end = /[\ud800-\udbff]/.test(text[max - 1]) ? max - 1 : max;
  return text.slice(0, end);
}
