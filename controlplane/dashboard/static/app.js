// wasmesh console: fetches /dashboard/api/* and renders; no external code or assets.
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

async function getJson(view) {
  const reply = await fetch(`api/${view}`, { cache: "no-store" });
  if (!reply.ok) throw new Error(`${view}: ${reply.status}`);
  return reply.json();
}

// ---- layered layout: columns by longest path from the sources, rows spread evenly ----
function layout(nodes, edges, width, height) {
  const incoming = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) if (e.source !== e.target) incoming.get(e.target)?.push(e.source);
  const depth = new Map();
  const visiting = new Set();
  function depthOf(id) {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id)) return 0; // a cycle: cut it here
    visiting.add(id);
    const parents = incoming.get(id) || [];
    const d = parents.length ? Math.max(...parents.map(depthOf)) + 1 : 0;
    visiting.delete(id);
    depth.set(id, d);
    return d;
  }
  nodes.forEach((n) => depthOf(n.id));
  const columns = [];
  for (const n of nodes) (columns[depth.get(n.id)] ||= []).push(n);
  const positions = new Map();
  const columnWidth = width / Math.max(columns.length, 1);
  columns.forEach((column, c) => {
    column.sort((a, b) => a.id.localeCompare(b.id));
    column.forEach((n, r) => {
      positions.set(n.id, { x: columnWidth * (c + 0.5), y: (height / (column.length + 1)) * (r + 1) });
    });
  });
  return positions;
}

function fmt(value, digits = 2) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function renderGraph(data) {
  const svg = document.getElementById("graph-svg");
  const width = svg.clientWidth || 1000, height = svg.clientHeight || 600;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  document.getElementById("graph-empty").hidden = data.nodes.length > 0;
  document.getElementById("graph-targets").textContent =
    data.targets.map((t) => `${t.target} (${t.up ? "up" : "down: " + t.error})`).join(", ") || "none";
  const defs = el("svg:defs", {}, el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
    markerWidth: "8", markerHeight: "8", orient: "auto-start-reverse" }, el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#4f86c6" })));
  svg.append(defs);
  const positions = layout(data.nodes, data.edges, width, height);
  const boxW = 170, boxH = 44;
  for (const e of data.edges) {
    const a = positions.get(e.source), b = positions.get(e.target);
    if (!a || !b) continue;
    const x1 = a.x + boxW / 2, x2 = b.x - boxW / 2, mid = (x1 + x2) / 2;
    const d = `M${x1},${a.y} C${mid},${a.y} ${mid},${b.y} ${x2},${b.y}`;
    const label = `${fmt(e.rps)} rps · ${fmt(e.error_rate * 100, 1)}% err · p99 ${fmt(e.p99_ms, 1)} ms`;
    const group = el("svg:g", { class: "edge" + (e.error_rate > 0 ? " errors" : ""), "data-source": e.source, "data-target": e.target },
      el("svg:path", { d, "marker-end": "url(#arrow)" }),
      el("svg:text", { x: mid, y: (a.y + b.y) / 2 - 8, "text-anchor": "middle" }, label));
    svg.append(group);
  }
  for (const n of data.nodes) {
    const p = positions.get(n.id);
    svg.append(el("svg:g", { class: "node" + (n.unknown ? " unknown" : ""), "data-id": n.id, transform: `translate(${p.x - boxW / 2},${p.y - boxH / 2})` },
      el("svg:rect", { width: boxW, height: boxH }),
      el("svg:text", { x: 10, y: 19 }, n.workload),
      el("svg:text", { x: 10, y: 35, class: "ns" }, n.namespace)));
  }
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))));
}

function renderProxies(data) {
  const section = document.getElementById("proxies");
  const rows = data.proxies.map((p) => {
    const types = Object.entries(p.types || {});
    const nacked = types.filter(([, s]) => String(s.status || "").includes("NACK") || s.error);
    const versions = types.map(([type, s]) => `${type} ${s.status || "-"} ${String(s.sent || "").slice(0, 8)}`).join("\n");
    return [p.name + "." + p.namespace, p.protocol, el("code", {}, versions || "-"),
      el("span", { class: nacked.length ? "bad" : "ok" },
        nacked.length ? "NACK: " + nacked.map(([t, s]) => `${t} ${s.error || ""}`).join("; ") : "synced")];
  });
  const targets = data.targets.map((t) => [t.target, el("span", { class: t.up ? "ok" : "bad" }, t.up ? "up" : "down"), t.error || ""]);
  section.replaceChildren(el("div", { class: "card" }, el("h2", {}, "xDS sync"), table(["proxy", "protocol", "versions", "state"], rows)),
    el("div", { class: "card" }, el("h2", {}, "Metric targets"), table(["target", "state", "error"], targets)));
}

function renderPlugins(plugins, selected) {
  const section = document.getElementById("plugins");
  if (selected) {
    const p = plugins.find((x) => x.name === selected);
    if (!p) { section.replaceChildren(el("p", { class: "muted" }, `No plugin ${selected}.`)); return; }
    const resource = p.resource || {};
    const status = resource.status || {};
    const signer = status.signer || (status.module && status.module.signer) || "unknown";
    section.replaceChildren(el("div", { class: "card plugin-detail", "data-plugin": p.name },
      el("h2", {}, p.name),
      el("dl", {},
        el("dt", {}, "module digest"), el("dd", { class: "digest" }, el("code", {}, p.digests.join(", ") || resource.sha256 || "-")),
        el("dt", {}, "source"), el("dd", {}, resource.url || "-"),
        el("dt", {}, "signer"), el("dd", {}, signer),
        el("dt", {}, "vm ids"), el("dd", {}, p.vm_ids.join(", ") || "-"),
        el("dt", {}, "traps"), el("dd", { class: "traps " + (p.traps ? "bad" : "ok") }, String(p.traps)),
        el("dt", {}, "deadline hits"), el("dd", {}, String(p.deadline_hits)),
        el("dt", {}, "reloads"), el("dd", {}, `${p.reloads} (${p.reload_failures} failed)`)),
      el("h2", {}, "Running on"),
      table(["workload", "digest", "healthy", "memory pages", "traps"], p.instances.map((i) =>
        [i.workload, el("code", {}, i.sha256.slice(0, 16)), el("span", { class: i.healthy ? "ok" : "bad" }, i.healthy ? "yes" : "failed"),
          String(i.memory_pages ?? "-"), String(i.traps)]))),
      el("p", {}, el("a", { href: "#/plugins" }, "all plugins")));
    return;
  }
  section.replaceChildren(el("div", { class: "card" }, el("h2", {}, "Wasm plugins"),
    table(["plugin", "digest", "workloads", "traps", "reloads"], plugins.map((p) =>
      [el("a", { href: `#/plugins/${encodeURIComponent(p.name)}` }, p.name), el("code", {}, (p.digests[0] || "").slice(0, 16)),
        p.instances.map((i) => i.workload).join(", ") || "-", String(p.traps), String(p.reloads)]))));
}

function renderConfig(data) {
  const section = document.getElementById("config");
  section.replaceChildren(
    el("div", { class: "card" }, el("h2", {}, "Validation"),
      data.diagnostics.length ? table(["level", "message"], data.diagnostics.map((d) => [el("span", { class: d.level === "error" ? "bad" : "warn" }, d.level), d.text]))
        : el("p", { class: "ok" }, "No validation issues.")),
    el("div", { class: "card" }, el("h2", {}, "Resources"),
      table(["kind", "namespace", "name"], data.resources.map((r) => [r.kind, r.namespace, r.name]))));
}

function route() {
  const [, view = "graph", arg] = (location.hash || "#/graph").split("/");
  return { view, arg: arg ? decodeURIComponent(arg) : "" };
}

async function refresh() {
  const { view, arg } = route();
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== view;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === view);
  try {
    if (view === "graph") renderGraph(await getJson("graph"));
    else if (view === "proxies") renderProxies(await getJson("proxies"));
    else if (view === "plugins") renderPlugins(await getJson("plugins"), arg);
    else if (view === "config") renderConfig(await getJson("config"));
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    document.getElementById("updated").textContent = "error: " + err.message;
  }
}

window.addEventListener("hashchange", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
