// Small helpers to build the DOM without a framework. Text always goes in
// as text nodes, never as HTML, so recorded values cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "style") {
      // Through the CSSOM: the page's policy refuses style attributes.
      Object.assign(el.style, value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function time(iso) {
  if (!iso) return "";
  return iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", "");
}

// Month, day and time: what a table has room for; `time` in its title.
export function shortTime(iso) {
  return time(iso).slice(5);
}

export function percent(p) {
  return `${Number(p).toFixed(1)}%`;
}

// A select of options ([value, label] pairs), with `current` selected.
export function select(attrs, options, current) {
  return h("select", attrs, options.map(([value, label]) =>
    h("option", { value, selected: value === current }, label)));
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, String(error.message || error));
}
