// A zoomable sunburst in SVG: each ring is one level of a tree, each arc's
// angle is the number of leaves below it. Drawn from the zoomed node out,
// so a click on an arc makes it the centre.

import { s } from "./dom.js";

const SIZE = 600;
const CENTRE = 70;
const OUTER = SIZE / 2 - 10;

// Leaves are counted and their states summed up the tree, once.
export function summarize(node) {
  if (!node.children || node.children.length === 0) {
    node.leaves = 1;
    node.hitLeaves = node.state === "hit" ? 1 : 0;
    node.eligibleUnhit = node.state === "eligible" ? 1 : 0;
    return node;
  }
  node.leaves = 0;
  node.hitLeaves = 0;
  node.eligibleUnhit = 0;
  for (const child of node.children) {
    child.parent = node;
    summarize(child);
    node.leaves += child.leaves;
    node.hitLeaves += child.hitLeaves;
    node.eligibleUnhit += child.eligibleUnhit;
  }
  return node;
}

export function find(node, key) {
  if (node.key === key) return node;
  for (const child of node.children || []) {
    const found = find(child, key);
    if (found) return found;
  }
  return null;
}

function point(angle, radius) {
  const a = angle - Math.PI / 2;
  return `${(radius * Math.cos(a)).toFixed(2)},${(radius * Math.sin(a)).toFixed(2)}`;
}

function arc(a0, a1, r0, r1) {
  // An arc whose ends meet draws nothing: a whole ring is two halves.
  if (a1 - a0 > Math.PI * 2 - 1e-3) {
    return `M${point(0, r1)}A${r1},${r1} 0 1 1 ${point(Math.PI, r1)}A${r1},${r1} 0 1 1 ${point(0, r1)}` +
      `M${point(0, r0)}A${r0},${r0} 0 1 0 ${point(Math.PI, r0)}A${r0},${r0} 0 1 0 ${point(0, r0)}Z`;
  }
  const large = a1 - a0 > Math.PI ? 1 : 0;
  return `M${point(a0, r0)}L${point(a0, r1)}A${r1},${r1} 0 ${large} 1 ${point(a1, r1)}` +
    `L${point(a1, r0)}A${r0},${r0} 0 ${large} 0 ${point(a0, r0)}Z`;
}

function height(node) {
  if (!node.children || node.children.length === 0) return 0;
  return 1 + Math.max(...node.children.map(height));
}

// Hit leaves are green, eligible leaves nothing hit are amber, the rest grey;
// an inner arc is greener the more of its leaves were hit.
export function colour(node) {
  if (!node.children || node.children.length === 0) {
    return { hit: "#2f9e5b", eligible: "#e08a2c", untested: "#cfd4da" }[node.state];
  }
  if (node.hitLeaves === 0) return "#b9c0c8";
  const share = node.hitLeaves / node.leaves;
  const lightness = Math.round(82 - share * 42);
  return `hsl(146, 52%, ${lightness}%)`;
}

export function describe(node) {
  if (!node.children || node.children.length === 0) {
    const state = { hit: "hit", eligible: "not hit, conformance-eligible", untested: "not hit" }[node.state];
    return `${node.label}: ${state}`;
  }
  return `${node.label}: ${node.hitLeaves} of ${node.leaves} operations hit`;
}

// Draws `root` (zoomed) into an SVG. `onZoom(node)` for an inner arc or the
// centre (its parent), `onPick(leaf)` for an operation, `onFocus(node)` as
// the pointer or keyboard moves over an arc.
export function draw(root, { onZoom, onPick, onFocus, depth = 4 }) {
  const svg = s("svg", {
    viewBox: `${-SIZE / 2} ${-SIZE / 2} ${SIZE} ${SIZE}`,
    class: "sunburst",
    role: "group",
    "aria-label": `Sunburst of ${root.label}`,
  });
  // The rings below the zoomed node share the radius, however many.
  const ring = (OUTER - CENTRE) / Math.max(1, Math.min(depth, height(root)));
  const activate = (node) => {
    if (node.children && node.children.length) onZoom(node);
    else onPick(node);
  };
  const place = (node, a0, a1, level) => {
    if (level > depth || !node.children) return;
    let angle = a0;
    for (const child of node.children) {
      const span = ((a1 - a0) * child.leaves) / node.leaves;
      const r0 = CENTRE + (level - 1) * ring;
      const isLeaf = !child.children || child.children.length === 0;
      const path = s("path", {
        d: arc(angle, angle + span, r0, r0 + ring - 1),
        fill: colour(child),
        "fill-rule": "evenodd",
        class: isLeaf ? "arc leaf" : "arc",
        tabindex: span > 0.012 ? 0 : -1,
        role: "button",
        "aria-label": describe(child),
        dataset: isLeaf
          ? { operation: child.key, state: child.state }
          : { node: child.key, state: child.hitLeaves > 0 ? "hit" : "unhit" },
        onclick: () => activate(child),
        onkeydown: (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            activate(child);
          }
        },
        onmouseenter: () => onFocus(child),
        onfocus: () => onFocus(child),
      }, s("title", {}, describe(child)));
      svg.append(path);
      labels.push(label(child, angle, angle + span, r0, r0 + ring - 1));
      place(child, angle, angle + span, level + 1);
      angle += span;
    }
  };
  const labels = [];
  place(root, 0, Math.PI * 2, 1);
  // Labels go over every arc, and let the pointer through to them.
  svg.append(...labels.filter(Boolean));
  const up = root.parent;
  const centre = s("g", {
    class: up ? "centre zoomable" : "centre",
    tabindex: up ? 0 : -1,
    role: up ? "button" : "img",
    "aria-label": up ? `Zoom out to ${up.label}` : describe(root),
    onclick: () => up && onZoom(up),
    onkeydown: (event) => {
      if (up && (event.key === "Enter" || event.key === " " || event.key === "Escape")) {
        event.preventDefault();
        onZoom(up);
      }
    },
  },
  s("circle", { r: CENTRE - 2, fill: "#fff", stroke: "#c7ccd1" }),
  s("text", { y: -6, "text-anchor": "middle", class: "centre-label" }, shorten(root.label)),
  s("text", { y: 14, "text-anchor": "middle", class: "centre-figure" },
    `${root.hitLeaves}/${root.leaves}`));
  svg.append(centre);
  return svg;
}

// A name drawn across its arc, when the arc is long and wide enough to hold
// a readable part of it; the title and the info line always give it whole.
const CHAR_WIDTH = 6.2;

function label(node, a0, a1, r0, r1) {
  const middle = (r0 + r1) / 2;
  const room = Math.min((a1 - a0) * middle, 2 * middle) - 8;
  const fits = Math.floor(room / CHAR_WIDTH);
  if (r1 - r0 < 14 || fits < 4) return null;
  const name = node.short || node.label;
  const text = name.length > fits ? `${name.slice(0, fits - 1)}…` : name;
  const at = (a0 + a1) / 2;
  const [x, y] = point(at, middle).split(",").map(Number);
  // Upright, along the tangent: turned a half-turn on the lower half.
  let degrees = (at * 180) / Math.PI;
  if (degrees > 90 && degrees < 270) degrees -= 180;
  return s("text", {
    x: x.toFixed(1),
    y: y.toFixed(1),
    transform: `rotate(${degrees.toFixed(1)} ${x.toFixed(1)} ${y.toFixed(1)})`,
    "text-anchor": "middle",
    "dominant-baseline": "central",
    class: "arc-label",
    "aria-hidden": "true",
  }, text);
}

function shorten(label) {
  return label.length > 16 ? `${label.slice(0, 15)}…` : label;
}
