// Small line icons drawn as SVG nodes (no markup strings, no icon font): path data per name.

const PATHS = {
  pencil: "M4 20h4L19 9l-4-4L4 16v4z M13.5 6.5l4 4",
  archive: "M3 5h18v4H3z M5 9v10h14V9 M10 13h4",
  unarchive: "M3 5h18v4H3z M5 9v10h14V9 M12 17v-6 M9.5 13.5 12 11l2.5 2.5",
  trash: "M4 7h16 M9 7V4h6v3 M6 7l1 13h10l1-13 M10 11v6 M14 11v6",
  menu: "M4 6h16 M4 12h16 M4 18h16",
  plus: "M12 5v14 M5 12h14",
  send: "M5 12h13 M12 6l6 6-6 6",
  stop: "M7 7h10v10H7z",
  copy: "M9 9h10v10H9z M5 15V5h10",
  download: "M12 4v11 M7 10l5 5 5-5 M5 20h14",
};

const SVG = "http://www.w3.org/2000/svg";

export function icon(name) {
  const svg = document.createElementNS(SVG, "svg");
  for (const [k, v] of Object.entries({ viewBox: "0 0 24 24", width: "18", height: "18", fill: "none", stroke: "currentColor", "stroke-width": "1.8", "stroke-linecap": "round", "stroke-linejoin": "round", "aria-hidden": "true", focusable: "false" })) {
    svg.setAttribute(k, v);
  }
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", PATHS[name]);
  svg.append(path);
  return svg;
}
