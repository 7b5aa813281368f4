// Coverage: a scope picked from the aggregator's lists, its summary per
// level, a sunburst of every operation of the spec (hit, eligible but not
// hit, not hit), and tables of operations, unknown calls and fields. It
// redraws when records arrive.

import { getJSON, watchIngest } from "./api.js";
import { errorBox, h, percent, replace, select, shortTime, time } from "./dom.js";
import { describe, draw, find, summarize } from "./sunburst.js";

const SCOPES = [
  ["cluster", "Cluster"],
  ["namespace", "Namespace"],
  ["pod", "Pod"],
  ["workload", "Workload"],
  ["client", "Client (User-Agent)"],
];

const WINDOWS = [
  ["", "All time"],
  ["1h", "Last hour"],
  ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"],
];
const WINDOW_HOURS = { "1h": 1, "24h": 24, "7d": 168 };

// `since` for a window, counted back from now: a link to "the last hour"
// stays the last hour whenever it is opened.
function sinceOf(params) {
  if (params.get("since")) return params.get("since");
  const hours = WINDOW_HOURS[params.get("window")];
  return hours ? new Date(Date.now() - hours * 3600 * 1000).toISOString() : "";
}

// The report route and query of a scope, from the page's parameters.
export function reportRequest(params) {
  const scope = params.get("scope") || "cluster";
  const ns = params.get("namespace") || "";
  const since = sinceOf(params);
  switch (scope) {
    case "pod":
      return {
        path: `/coverage/${encodeURIComponent(ns)}/${encodeURIComponent(params.get("pod") || "")}`,
        query: { since },
      };
    case "workload":
      return { path: "/coverage", query: { namespace: ns, workload: params.get("workload"), since } };
    case "namespace":
      return { path: "/coverage", query: { namespace: ns, since } };
    case "client":
      return { path: "/coverage", query: { namespace: ns, user_agent: params.get("user_agent"), since } };
    default:
      return { path: "/coverage", query: { since } };
  }
}

function scopeLabel(params) {
  const scope = params.get("scope") || "cluster";
  const ns = params.get("namespace");
  switch (scope) {
    case "pod": return `pod ${ns}/${params.get("pod")}`;
    case "workload": return `workload ${ns}/${params.get("workload")}`;
    case "namespace": return `namespace ${ns}`;
    case "client": return `client ${params.get("user_agent")}`;
    default: return "cluster";
  }
}

// When nothing is picked: the whole cluster if the reader may see it, or
// else its first namespace.
function defaultScope(params, scopes) {
  if (params.get("scope")) return params;
  const picked = new URLSearchParams(params);
  if (scopes.cluster || scopes.namespaces.length === 0) {
    picked.set("scope", "cluster");
  } else {
    picked.set("scope", "namespace");
    picked.set("namespace", scopes.namespaces[0]);
  }
  return picked;
}

function gvLabel(op) {
  if (!op.version) return "(unversioned)";
  return `${op.group || "core"}/${op.version}`;
}

// level → group/version → resource → operation, every operation of the
// spec as a leaf, in label order.
export function operationTree(operations, hitIds, label) {
  const root = { key: "", label, children: [] };
  const child = (parent, key, label) => {
    parent.index = parent.index || new Map();
    let node = parent.index.get(key);
    if (!node) {
      node = { key, label, children: [] };
      parent.index.set(key, node);
      parent.children.push(node);
    }
    return node;
  };
  for (const op of operations) {
    const level = child(root, op.level, op.level);
    const gv = child(level, `${op.level}/${gvLabel(op)}`, gvLabel(op));
    const resource = child(gv, `${gv.key}/${op.resource}`, op.resource);
    resource.children.push({
      key: op.operation_id,
      label: op.operation_id,
      short: shortName(op),
      op,
      state: hitIds.has(op.operation_id) ? "hit" : op.eligible ? "eligible" : "untested",
    });
  }
  const order = { stable: 0, beta: 1, alpha: 2 };
  const sort = (node) => {
    delete node.index;
    node.children.sort((a, b) =>
      (order[a.key] ?? 9) - (order[b.key] ?? 9) || a.label.localeCompare(b.label));
    node.children.forEach((c) => c.children && sort(c));
  };
  sort(root);
  return summarize(root);
}

const VERB_OF_ACTION = { post: "create", put: "replace", get: "read" };

// What fits on an operation's arc: its verb, and its subresource if any
// (`create`, `read status`); the operationId is in its title.
function shortName(op) {
  const verb = VERB_OF_ACTION[op.action] || op.action || op.method.toLowerCase();
  return op.subresource ? `${verb} ${op.subresource}` : verb;
}

function leavesOf(node, out = []) {
  if (!node.children || node.children.length === 0) out.push(node);
  else node.children.forEach((c) => leavesOf(c, out));
  return out;
}

function statuses(map) {
  return Object.entries(map || {}).map(([code, n]) => `${code}×${n}`).join(" ");
}

const COLUMNS = [
  ["operation_id", "Operation"],
  ["method", "Method"],
  ["hits", "Hits"],
  ["statuses", "Statuses"],
  ["first_seen", "First seen (UTC)"],
  ["last_seen", "Last seen (UTC)"],
  ["fields", "Fields"],
];

function sortValue(row, key) {
  switch (key) {
    case "statuses": return Object.keys(row.statuses || {}).join(",");
    case "clients": return [...(row.clients || [])].join(",");
    case "fields": return row.fields ? row.fields.percent : -1;
    default: return row[key] ?? "";
  }
}

// The fields of a schema as a tree of dotted paths, each marked with how
// many request bodies set it.
export function fieldTree(all, set) {
  const root = { name: "", path: "", children: new Map(), hits: 0, known: false };
  const add = (path) => {
    let node = root;
    for (const part of path.split(".")) {
      const at = node.path ? `${node.path}.${part}` : part;
      if (!node.children.has(part)) {
        node.children.set(part, { name: part, path: at, children: new Map(), hits: 0, known: false });
      }
      node = node.children.get(part);
    }
    return node;
  };
  for (const path of all) add(path).known = true;
  for (const [path, hits] of Object.entries(set || {})) add(path).hits = hits;
  const count = (node) => {
    node.total = node.known ? 1 : 0;
    node.hitCount = node.hits > 0 ? 1 : 0;
    for (const c of node.children.values()) {
      count(c);
      node.total += c.total;
      node.hitCount += c.hitCount;
    }
  };
  count(root);
  return root;
}

function fieldList(node) {
  const items = [...node.children.values()].sort((a, b) => a.name.localeCompare(b.name));
  return h("ul", { class: "fields" }, items.map((c) => {
    const mark = c.hits > 0 ? h("span", { class: "mark hit" }, `set ×${c.hits}`)
      : c.known ? h("span", { class: "mark unhit" }, "not set") : null;
    const label = [h("code", {}, c.name), " ", mark,
      c.children.size ? h("span", { class: "muted" }, ` ${c.hitCount}/${c.total}`) : null];
    if (c.children.size === 0) return h("li", { dataset: { field: c.path, state: c.hits ? "hit" : "unhit" } }, label);
    return h("li", { dataset: { field: c.path, state: c.hitCount ? "hit" : "unhit" } },
      h("details", { open: c.hitCount > 0 }, h("summary", {}, label), fieldList(c)));
  }));
}

export async function renderCoverage(view, params, ctx) {
  const scopes = await getJSON("/scopes");
  params = defaultScope(params, scopes);
  ctx.remember(params);
  const scope = params.get("scope");
  const state = {
    zoom: params.get("zoom") || "",
    sort: params.get("sort") || "hits",
    dir: params.get("dir") || "desc",
    untested: params.get("untested") === "1",
    expanded: new Set(),
    report: null,
    operations: [],
    tree: null,
  };
  const save = () => {
    const p = new URLSearchParams(params);
    p.set("zoom", state.zoom);
    p.set("sort", state.sort);
    p.set("dir", state.dir);
    p.set("untested", state.untested ? "1" : "");
    ctx.remember(p);
  };

  // The scope picker: a kind of scope, then one of those the reader may see.
  const go = (changes) => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries({ window: params.get("window"), ...changes })) if (v) p.set(k, v);
    ctx.go("/coverage", p);
  };
  const windowSelect = select({ id: "window", "aria-label": "Time window" }, WINDOWS, params.get("window") || "");
  windowSelect.addEventListener("change", () => {
    const p = new URLSearchParams(params);
    p.delete("since");
    p.set("window", windowSelect.value);
    if (!windowSelect.value) p.delete("window");
    ctx.go("/coverage", p);
  });
  const kinds = SCOPES.filter(([k]) => k !== "cluster" || scopes.cluster);
  const kindSelect = select({ id: "scope-kind", "aria-label": "Scope" }, kinds, scope);
  const valueOptions = {
    cluster: [],
    namespace: scopes.namespaces.map((n) => [n, n]),
    pod: scopes.pods.map((p) => [`${p.namespace}/${p.name}`, `${p.namespace}/${p.name}`]),
    workload: scopes.workloads.map((w) => [`${w.namespace}/${w.name}`, `${w.namespace}/${w.name}`]),
    client: scopes.clients.map((c) => [c, c]),
  };
  const currentValue = {
    namespace: params.get("namespace"),
    pod: `${params.get("namespace")}/${params.get("pod")}`,
    workload: `${params.get("namespace")}/${params.get("workload")}`,
    client: params.get("user_agent"),
  }[scope];
  const valueSelect = select({ id: "scope-value", "aria-label": "Which one" },
    [["", "—"], ...(valueOptions[scope] || [])], currentValue);
  valueSelect.hidden = scope === "cluster";
  const pick = (kind, value) => {
    if (kind === "cluster") return go({ scope: "cluster" });
    if (!value) return;
    if (kind === "namespace") return go({ scope: kind, namespace: value });
    if (kind === "client") return go({ scope: kind, user_agent: value, namespace: scopes.cluster ? "" : params.get("namespace") });
    // A workload's name holds its kind and a slash: the namespace ends at
    // the first one.
    const at = value.indexOf("/");
    return go({ scope: kind, namespace: value.slice(0, at), [kind]: value.slice(at + 1) });
  };
  kindSelect.addEventListener("change", () => {
    const kind = kindSelect.value;
    const first = (valueOptions[kind] || [])[0];
    pick(kind, first && first[0]);
  });
  valueSelect.addEventListener("change", () => pick(kindSelect.value, valueSelect.value));

  const summary = h("section", { class: "summary", "aria-label": "Summary" });
  const crumbs = h("nav", { class: "crumbs", "aria-label": "Zoom path" });
  const chart = h("div", { class: "chart" });
  const info = h("p", { class: "info", "aria-live": "polite" }, "Point at or tab to an arc.");
  const opsBody = h("tbody");
  const opsHead = h("thead");
  const untestedBox = h("input", { type: "checkbox", id: "show-untested", checked: state.untested });
  const unknown = h("section", { class: "unknown" });
  const caption = h("caption");

  replace(view,
    h("h1", {}, "API coverage of ", h("span", { id: "scope-label" }, scopeLabel(params))),
    h("div", { class: "controls" }, kindSelect, valueSelect, windowSelect,
      h("a", { class: "raw", href: reportRequest(params).path }, "JSON")),
    summary,
    h("div", { class: "coverage-grid" },
      h("div", {}, crumbs, chart, info, legend()),
      h("div", { class: "tables" },
        h("label", { class: "toggle" }, untestedBox, " Show operations nothing called"),
        h("div", { class: "scroll" }, h("table", { id: "operations" }, caption, opsHead, opsBody)),
        unknown)));

  untestedBox.addEventListener("change", () => {
    state.untested = untestedBox.checked;
    save();
    drawTable();
  });

  const zoomTo = (node) => {
    state.zoom = node.key;
    save();
    drawChart();
    drawTable();
    const again = chart.querySelector(".centre.zoomable");
    if (again) again.focus();
  };

  function drawChart() {
    const root = (state.zoom && find(state.tree, state.zoom)) || state.tree;
    const path = [];
    for (let n = root; n; n = n.parent) path.unshift(n);
    replace(crumbs, path.map((n, i) => i === path.length - 1
      ? h("span", { "aria-current": "location" }, n.label)
      : [h("button", { type: "button", class: "link", onclick: () => zoomTo(n) }, n.label), " › "]));
    replace(chart, draw(root, {
      onZoom: zoomTo,
      onPick: (leaf) => {
        const row = opsBody.querySelector(`tr[data-operation="${CSS.escape(leaf.key)}"]`);
        if (row) {
          row.scrollIntoView({ block: "center" });
          row.classList.add("picked");
          setTimeout(() => row.classList.remove("picked"), 1500);
        }
        info.textContent = describe(leaf);
      },
      onFocus: (node) => { info.textContent = describe(node); },
    }));
  }

  function drawSummary() {
    const r = state.report;
    const bars = ["stable", "beta", "alpha", "eligible"].map((level) => {
      const t = r.summary[level];
      return h("div", { class: `tally ${level}`, dataset: { level } },
        h("span", { class: "name" }, level),
        h("span", { class: "figure" }, `${t.hit}/${t.total}`),
        h("span", { class: "bar", role: "img", "aria-label": `${percent(t.percent)} of ${level} operations hit` },
          h("span", { class: "fill", style: { width: `${Math.min(100, t.percent)}%` } })),
        h("span", { class: "pct" }, percent(t.percent)));
    });
    replace(summary, bars,
      r.dropped ? h("p", { class: "warning" }, `${r.dropped} records were dropped by interceptors: calls among them are missing.`) : null);
  }

  function drawTable() {
    const root = (state.zoom && find(state.tree, state.zoom)) || state.tree;
    const inView = new Set(leavesOf(root).map((l) => l.key));
    const hit = new Map(state.report.operations.map((o) => [o.operation_id, o]));
    let rows = state.operations.filter((o) => inView.has(o.operation_id))
      .map((o) => hit.get(o.operation_id) || { ...o, hits: 0, statuses: {}, clients: [], first_seen: "", last_seen: "" })
      .filter((o) => state.untested || o.hits > 0);
    const sign = state.dir === "asc" ? 1 : -1;
    rows.sort((a, b) => {
      const x = sortValue(a, state.sort);
      const y = sortValue(b, state.sort);
      return (x < y ? -1 : x > y ? 1 : 0) * sign || a.operation_id.localeCompare(b.operation_id);
    });
    caption.textContent = `${rows.length} operations under ${root.label}`;
    replace(opsHead, h("tr", {}, COLUMNS.map(([key, label]) => h("th", {
      scope: "col",
      "aria-sort": state.sort === key ? (state.dir === "asc" ? "ascending" : "descending") : null,
    }, h("button", {
      type: "button",
      class: "sort",
      dataset: { sort: key },
      onclick: () => {
        state.dir = state.sort === key && state.dir === "desc" ? "asc" : "desc";
        state.sort = key;
        save();
        drawTable();
        opsHead.querySelector(`button[data-sort="${key}"]`).focus();
      },
    }, label, state.sort === key ? (state.dir === "asc" ? " ▲" : " ▼") : "")))));
    replace(opsBody, rows.map((o) => operationRows(o)).flat());
  }

  function operationRows(o) {
    const fieldsCell = o.fields
      ? h("button", {
        type: "button",
        class: "link",
        "aria-expanded": state.expanded.has(o.operation_id) ? "true" : "false",
        onclick: (event) => {
          if (state.expanded.has(o.operation_id)) state.expanded.delete(o.operation_id);
          else state.expanded.add(o.operation_id);
          drawTable();
          const again = opsBody.querySelector(`tr[data-operation="${CSS.escape(o.operation_id)}"] button.link`);
          if (again) again.focus({ preventScroll: true });
          event.preventDefault();
        },
      }, `${o.fields.hit}/${o.fields.total} (${percent(o.fields.percent)})`)
      : "";
    const state_ = o.hits > 0 ? "hit" : o.eligible ? "eligible" : "untested";
    const row = h("tr", { dataset: { operation: o.operation_id, state: state_ } },
      h("th", { scope: "row" }, h("code", {}, o.operation_id),
        h("div", { class: "path" }, o.path),
        o.deprecated ? h("span", { class: "tag" }, "deprecated") : null,
        o.crd ? h("span", { class: "tag" }, "CRD") : null,
        o.aggregated ? h("span", { class: "tag" }, "aggregated") : null,
        h("span", { class: "tag" }, o.level),
        o.eligible ? h("span", { class: "tag" }, "eligible") : null,
        (o.clients || []).length ? h("div", { class: "clients" }, "by ", [...o.clients].join(", ")) : null),
      h("td", {}, o.method),
      h("td", { class: "num" }, o.hits),
      h("td", {}, statuses(o.statuses)),
      h("td", { class: "time", title: time(o.first_seen) }, shortTime(o.first_seen)),
      h("td", { class: "time", title: time(o.last_seen) }, shortTime(o.last_seen)),
      h("td", {}, fieldsCell));
    if (!o.fields || !state.expanded.has(o.operation_id)) return [row];
    const detail = h("td", { colspan: COLUMNS.length }, "Loading fields…");
    getJSON(`/spec/operations/${encodeURIComponent(o.operation_id)}/fields`)
      .then((answer) => {
        const tree = fieldTree(answer.fields, o.fields.set);
        replace(detail,
          h("p", {}, `${o.fields.hit} of ${o.fields.total} fields of the request body set`),
          fieldList(tree),
          o.fields.unknown && o.fields.unknown.length
            ? h("p", {}, "Set but not in the schema: ", o.fields.unknown.map((f) => h("code", {}, f, " ")))
            : null);
      })
      .catch((error) => replace(detail, errorBox(error)));
    return [row, h("tr", { class: "detail", dataset: { fieldsOf: o.operation_id } }, detail)];
  }

  function drawUnknown() {
    const calls = state.report.unknown;
    replace(unknown, h("h2", {}, `Calls the spec does not know (${calls.length})`),
      calls.length === 0 ? h("p", { class: "muted" }, "None.") :
        h("div", { class: "scroll" }, h("table", { id: "unknown" },
          h("thead", {}, h("tr", {}, ["Method", "Path", "Reason", "Hits", "Statuses"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, calls.map((c) => h("tr", {},
            h("td", {}, c.method), h("td", {}, h("code", {}, c.path)),
            h("td", {}, c.reason.replaceAll("_", " ")), h("td", { class: "num" }, c.hits),
            h("td", {}, statuses(c.statuses))))))));
  }

  async function load() {
    const request = reportRequest(params);
    const [report, spec] = await Promise.all([
      getJSON(request.path, request.query),
      getJSON("/spec/operations"),
    ]);
    state.report = report;
    state.operations = spec.operations;
    const hitIds = new Set(report.operations.filter((o) => o.hits > 0).map((o) => o.operation_id));
    state.tree = operationTree(spec.operations, hitIds, scopeLabel(params));
    if (state.zoom && !find(state.tree, state.zoom)) state.zoom = "";
    drawSummary();
    drawChart();
    drawTable();
    drawUnknown();
    view.dataset.loaded = String(Date.now());
  }

  await load();
  performance.mark("apiwitness:coverage-drawn");

  // Redraw as records arrive, at most once a second.
  let pending = null;
  watchIngest((count) => {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      try {
        await load();
        ctx.setLive(`live · ${count} records since start`);
      } catch (error) {
        if (!ctx.signal.aborted) ctx.setLive(`update failed: ${error.message}`);
      }
    }, 1000);
  }, ctx.signal, (s) => ctx.setLive({
    live: "live",
    reconnecting: "reconnecting…",
    "signed-out": "not live: the token is no longer accepted (reload to sign in)",
  }[s]));
}

function legend() {
  return h("ul", { class: "legend", "aria-label": "Legend" },
    h("li", {}, h("span", { class: "swatch hit" }), "hit"),
    h("li", {}, h("span", { class: "swatch eligible" }), "eligible, not hit"),
    h("li", {}, h("span", { class: "swatch untested" }), "not hit"));
}
