// Provenance: search the objects that traffic touched, then an object's
// timeline (one row per version, with who wrote it and how it was seen),
// a side-by-side YAML diff of any two versions, and bisect.

import { getJSON } from "./api.js";
import { errorBox, h, replace, time } from "./dom.js";

function objectBase(namespace, resource, name) {
  const r = encodeURIComponent(resource);
  const n = encodeURIComponent(name);
  return namespace
    ? `/provenance/namespaces/${encodeURIComponent(namespace)}/${r}/${n}`
    : `/provenance/${r}/${n}`;
}

function objectParams(o) {
  return new URLSearchParams({
    namespace: o.namespace,
    resource: o.group ? `${o.resource}.${o.group}` : o.resource,
    name: o.name,
  });
}

export async function renderSearch(view, params, ctx) {
  const kind = h("input", { id: "search-kind", name: "kind", value: params.get("kind") || "", placeholder: "Kind or resource" });
  const namespace = h("input", { id: "search-namespace", name: "namespace", value: params.get("namespace") || "", placeholder: "any" });
  const name = h("input", { id: "search-name", name: "name", value: params.get("name") || "", placeholder: "part of the name" });
  const results = h("section", { "aria-live": "polite" });
  const form = h("form", { class: "search", role: "search" },
    h("label", {}, "Kind ", kind),
    h("label", {}, "Namespace ", namespace),
    h("label", {}, "Name ", name),
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.go("/provenance", new URLSearchParams({ kind: kind.value, namespace: namespace.value, name: name.value }));
  });
  replace(view, h("h1", {}, "Provenance"),
    h("p", { class: "muted" }, "Every object the recorded traffic touched, with each version it saw."),
    form, results);
  const answer = await getJSON("/objects", {
    kind: params.get("kind"),
    namespace: params.get("namespace"),
    name: params.get("name"),
  });
  replace(results,
    h("p", {}, `${answer.objects.length} objects${answer.truncated ? " (the latest shown: narrow the search)" : ""}`),
    h("div", { class: "scroll" }, h("table", { id: "objects" },
      h("thead", {}, h("tr", {}, ["Kind", "Namespace", "Name", "Versions", "Last seen (UTC)"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, answer.objects.map((o) => h("tr", { dataset: { kind: o.kind, name: o.name } },
        h("td", {}, o.kind || o.resource, o.group ? h("span", { class: "muted" }, ` ${o.group}`) : null),
        h("td", {}, o.namespace || "(cluster)"),
        h("th", { scope: "row" }, h("a", { href: ctx.hrefOf("/object", objectParams(o)) }, o.name)),
        h("td", { class: "num" }, o.versions),
        h("td", {}, time(o.last_seen))))))));
}

function who(w) {
  return [
    w.pod ? h("div", {}, h("span", { class: "muted" }, "pod "), w.pod) : null,
    w.serviceAccount ? h("div", {}, h("span", { class: "muted" }, "sa "), w.serviceAccount) : null,
    w.userAgent ? h("div", { class: "ua" }, h("span", { class: "muted" }, "ua "), w.userAgent) : null,
    w.fieldManager ? h("div", {}, h("span", { class: "muted" }, "manager "), w.fieldManager) : null,
  ];
}

export async function renderObject(view, params, ctx) {
  const namespace = params.get("namespace") || "";
  const resource = params.get("resource") || "";
  const name = params.get("name") || "";
  if (!resource || !name) throw new Error("an object needs resource and name in the link");
  const base = objectBase(namespace, resource, name);
  const listing = await getJSON(`${base}/versions`);
  const versions = listing.versions;
  const last = versions.length;
  const state = {
    a: Number(params.get("a")) || Math.max(1, last - 1),
    b: Number(params.get("b")) || last,
    field: params.get("field") || "",
    bisectField: params.get("bfield") || "",
    bisectValue: params.get("bvalue") || "",
    first: null,
  };
  const save = () => {
    const p = new URLSearchParams({ namespace, resource, name, a: state.a, b: state.b, field: state.field,
      bfield: state.bisectField, bvalue: state.bisectValue });
    ctx.remember(p);
  };

  const o = listing.object;
  const timelineBody = h("tbody");
  const diffBox = h("section", { class: "diff", "aria-live": "polite" });
  const bisectBox = h("p", { class: "bisect-answer", "aria-live": "polite" });
  const fieldInput = h("input", { id: "diff-field", value: state.field, placeholder: "e.g. spec or spec.replicas" });
  const bisectField = h("input", { id: "bisect-field", value: state.bisectField, placeholder: "spec.replicas", required: true });
  const bisectValue = h("input", { id: "bisect-value", value: state.bisectValue, placeholder: "3", required: true });
  const diffForm = h("form", { class: "inline", id: "diff-form" },
    h("label", {}, "Only the field ", fieldInput), h("button", { type: "submit" }, "Compare"));
  const bisectForm = h("form", { class: "inline", id: "bisect-form" },
    h("label", {}, "First version where ", bisectField), h("label", {}, " is ", bisectValue),
    h("button", { type: "submit" }, "Bisect"));

  replace(view,
    h("p", {}, h("a", { href: ctx.hrefOf("/provenance", new URLSearchParams({ kind: o.kind || o.resource })) }, "← all objects")),
    h("h1", {}, `${o.kind || o.resource} `, h("span", { id: "object-name" }, namespace ? `${namespace}/${name}` : name)),
    h("h2", {}, `Timeline (${last} versions)`),
    h("p", { class: "muted" }, "Pick A and B to compare two versions."),
    h("div", { class: "scroll" }, h("table", { id: "timeline" },
      h("thead", {}, h("tr", {}, ["A", "B", "#", "Time (UTC)", "Verb", "Source", "Who", "resourceVersion", "Generation"]
        .map((c) => h("th", { scope: "col" }, c)))),
      timelineBody)),
    listing.attempts && listing.attempts.length ? attempts(listing.attempts) : null,
    h("h2", {}, "Bisect"), bisectForm, bisectBox,
    h("h2", {}, "Diff"), diffForm, diffBox);

  function drawTimeline() {
    replace(timelineBody, versions.map((v) => h("tr", {
      dataset: { ordinal: v.ordinal },
      class: [v.ordinal === state.first ? "first" : "", v.deleted ? "deleted" : ""].join(" ").trim() || null,
    },
    h("td", {}, h("input", { type: "radio", name: "a", "aria-label": `A: version ${v.ordinal}`, checked: v.ordinal === state.a,
      onchange: () => { state.a = v.ordinal; save(); drawDiff(); } })),
    h("td", {}, h("input", { type: "radio", name: "b", "aria-label": `B: version ${v.ordinal}`, checked: v.ordinal === state.b,
      onchange: () => { state.b = v.ordinal; save(); drawDiff(); } })),
    h("th", { scope: "row" }, v.ordinal),
    h("td", { class: "time" }, time(v.time)),
    h("td", {}, v.verb, v.deleted ? h("span", { class: "tag" }, "deleted") : null),
    h("td", {}, v.source),
    h("td", { class: "who" }, who(v.who || {})),
    h("td", {}, h("code", {}, v.resourceVersion)),
    h("td", { class: "num" }, v.generation ?? ""))));
  }

  async function drawDiff() {
    if (last < 1) return replace(diffBox, h("p", {}, "No version to compare."));
    replace(diffBox, h("p", { class: "muted" }, "Comparing…"));
    try {
      const d = await getJSON(`${base}/diff`, { start: state.a, end: state.b, field: state.field, format: "side-by-side" });
      const changed = d.rows.filter((r) => r.change !== "same").length;
      replace(diffBox,
        h("p", {}, `${d.labels[0]} → ${d.labels[1]}${d.field ? `, field ${d.field}` : ""}: `,
          changed ? `${changed} lines differ` : "no difference"),
        h("div", { class: "scroll" }, h("table", { class: "side-by-side", id: "diff" },
          h("colgroup", {}, h("col", { class: "no" }), h("col"), h("col", { class: "no" }), h("col")),
          h("thead", {}, h("tr", {}, h("th", { scope: "col", colspan: 2 }, `A: version ${d.start}`),
            h("th", { scope: "col", colspan: 2 }, `B: version ${d.end}`))),
          h("tbody", {}, collapse(d.rows).map(diffRow)))));
    } catch (error) {
      replace(diffBox, errorBox(error));
    }
  }

  async function runBisect() {
    if (!state.bisectField) return;
    replace(bisectBox, "Bisecting…");
    try {
      const answer = await getJSON(`${base}/bisect`, { field: state.bisectField, value: state.bisectValue });
      if (!answer.first) {
        state.first = null;
        replace(bisectBox, `No version has ${state.bisectField} = ${state.bisectValue}.`);
      } else {
        state.first = answer.first.ordinal;
        state.a = Math.max(1, state.first - 1);
        state.b = state.first;
        replace(bisectBox, `${state.bisectField} first became ${state.bisectValue} in version ${state.first}`,
          ` (${time(answer.first.time)}, ${answer.first.verb}). Compared with the version before it below.`);
        save();
        drawDiff();
      }
      drawTimeline();
      const row = timelineBody.querySelector(`tr[data-ordinal="${state.first}"]`);
      if (row) row.scrollIntoView({ block: "nearest" });
    } catch (error) {
      replace(bisectBox, errorBox(error));
    }
  }

  diffForm.addEventListener("submit", (event) => {
    event.preventDefault();
    state.field = fieldInput.value.trim();
    save();
    drawDiff();
  });
  bisectForm.addEventListener("submit", (event) => {
    event.preventDefault();
    state.bisectField = bisectField.value.trim();
    state.bisectValue = bisectValue.value;
    save();
    runBisect();
  });

  save();
  drawTimeline();
  await drawDiff();
  if (state.bisectField) await runBisect();
}

// Long runs of unchanged lines fold to three lines of context each side.
function collapse(rows) {
  const out = [];
  const CONTEXT = 3;
  let i = 0;
  while (i < rows.length) {
    if (rows[i].change !== "same") { out.push(rows[i]); i += 1; continue; }
    let j = i;
    while (j < rows.length && rows[j].change === "same") j += 1;
    const run = rows.slice(i, j);
    const keepHead = i === 0 ? 0 : CONTEXT;
    const keepTail = j === rows.length ? 0 : CONTEXT;
    if (run.length > keepHead + keepTail + 1) {
      out.push(...run.slice(0, keepHead));
      out.push({ change: "fold", hidden: run.length - keepHead - keepTail });
      out.push(...run.slice(run.length - keepTail));
    } else {
      out.push(...run);
    }
    i = j;
  }
  return out;
}

function diffRow(r) {
  if (r.change === "fold") {
    return h("tr", { class: "fold" }, h("td", { colspan: 4 }, `⋯ ${r.hidden} unchanged lines`));
  }
  const side = (line, cls) => [
    h("td", { class: "no" }, line ? line.number : ""),
    h("td", { class: line ? cls : "empty" }, h("pre", {}, line ? line.text : "")),
  ];
  return h("tr", { class: r.change, dataset: { change: r.change } },
    side(r.left, r.change === "same" ? "" : "old"),
    side(r.right, r.change === "same" ? "" : "new"));
}

function attempts(list) {
  return [h("h2", {}, `Refused writes (${list.length})`),
    h("div", { class: "scroll" }, h("table", { id: "attempts" },
      h("thead", {}, h("tr", {}, ["Time (UTC)", "Verb", "Status", "Message", "Who"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, list.map((a) => h("tr", {},
        h("td", {}, time(a.time)), h("td", {}, a.verb), h("td", { class: "num" }, a.status),
        h("td", {}, a.message), h("td", { class: "who" }, who(a.who || {})))))))];
}
