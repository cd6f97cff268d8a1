// Nodes: the shared node row (overview and the nodes list), the nodes list
// (paginated, searchable, filterable by state), and Drain/Undrain for admins.

import { api } from "../api.js";
import { badge, fmtBytes, fmtCpu, fmtDuration, fmtInt, h, table, throttle, usageBar } from "../dom.js";

export const PAGE = 50;
export const NODE_HEADERS = ["Node", "State", "CPU", "Memory", "GPU", ["Tasks", "num"], ["Heartbeat", "num"], ""];

/** Busy host cores (from the heartbeat's host CPU %) of a node's capacity. */
export function busyCores(node) {
  return (Math.max(0, Math.min(100, node.used_cpu_percent)) / 100) * node.cpu;
}

/**
 * The CPU cell: allocated cores (tinted) and busy host cores (solid) of capacity.
 * The text says what each figure is; a busy host is amber, never red (red is for
 * faults: a down node, a failed task, memory nearly exhausted).
 */
export function cpuCell(node) {
  return [
    usageBar({
      used: busyCores(node), allocated: node.allocated_cpu, total: node.cpu, warm: 90, hot: Infinity,
      text: `${fmtCpu(node.allocated_cpu)} / ${fmtCpu(node.cpu)} cores allocated`,
    }),
    h("div", { class: "bar-sub" }, `host CPU ${node.used_cpu_percent.toFixed(0)}% busy (${fmtCpu(Math.round(busyCores(node) * 100) / 100)} cores)`),
  ];
}

export function memoryCell(node) {
  return [
    usageBar({
      used: node.used_memory_bytes, allocated: node.allocated_memory_bytes, total: node.memory_bytes,
      text: `${fmtBytes(node.used_memory_bytes)} in use`,
    }),
    h("div", { class: "bar-sub" }, `${fmtBytes(node.allocated_memory_bytes)} / ${fmtBytes(node.memory_bytes)} allocated`),
  ];
}

export function gpuCell(node) {
  const gpus = Array.isArray(node.gpus) ? node.gpus : [];
  if (!gpus.length) return h("span", { class: "muted" }, "–");
  const held = Array.isArray(node.gpus_allocated) ? node.gpus_allocated : [];
  return [
    usageBar({ allocated: held.length, total: gpus.length, text: `${held.length} / ${gpus.length}` }),
    h("div", { class: "bar-sub" }, `GPUs allocated${held.length ? ` (${held.join(", ")})` : ""}`),
  ];
}

export function paintHb(cell, age) {
  cell.textContent = fmtDuration(age);
  cell.classList.toggle("hb-stale", age >= 10 && age < 30);
  cell.classList.toggle("hb-dead", age >= 30);
}

export function hbCell(node) {
  const cell = h("td", { class: "num hb", dataset: { age: String(node.heartbeat_age_s) } });
  paintHb(cell, node.heartbeat_age_s);
  return cell;
}

export function nodeLink(node) {
  return h("a", { class: "node-name", href: `#/nodes/${encodeURIComponent(node.id)}` }, node.name);
}

export function labelChips(labels) {
  const entries = Object.entries(labels || {});
  return entries.length ? h("div", { class: "labels" }, entries.map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`))) : null;
}

export function drainButton(app, node, done) {
  if (!app.me.admin) return null;
  return node.draining
    ? h("button", { class: "btn small", dataset: { action: "undrain" }, onclick: () => drainAction(app, node, false, done) }, "Undrain")
    : h("button", { class: "btn small", dataset: { action: "drain" }, onclick: () => drainAction(app, node, true, done) }, "Drain");
}

export async function drainAction(app, node, drain, done) {
  const ok = await app.confirm(drain
    ? `Drain ${node.name}? No new tasks are placed there; running jobs are stopped and moved after 60 s.`
    : `Undrain ${node.name}? It takes new tasks again.`, drain ? "Drain" : "Undrain");
  if (!ok) return;
  try {
    await api("POST", `/api/v1/nodes/${encodeURIComponent(node.id)}/${drain ? "drain" : "undrain"}`, { body: drain ? {} : undefined });
    app.toast(`${drain ? "Draining" : "Undrained"} ${node.name}`);
    done();
  } catch (exc) {
    app.toast(`${drain ? "Drain" : "Undrain"} failed: ${exc.message}`, true);
  }
}

export function nodeRow(app, node, done) {
  return h("tr", { dataset: { node: node.name, nodeId: node.id } },
    h("td", {}, nodeLink(node), h("div", { class: "muted mono" }, node.id), h("div", { class: "muted" }, node.driver), labelChips(node.labels)),
    h("td", {}, badge(node.state)),
    h("td", { class: "usage cpu" }, cpuCell(node)),
    h("td", { class: "usage memory" }, memoryCell(node)),
    h("td", { class: "usage gpu" }, gpuCell(node)),
    h("td", { class: "num" }, String(node.tasks)),
    hbCell(node),
    h("td", { class: "actions" }, drainButton(app, node, done)),
  );
}

/**
 * A node table with search, state filter and pager; returns {el, load(), tick()}.
 * ``load`` re-reads the page; ``tick`` ages the heartbeat cells locally.
 */
export function nodeList(app, { onLoaded = () => {} } = {}) {
  let offset = 0;
  let q = "";
  let stateFilter = "";
  let fetchedAt = performance.now();
  const search = h("input", { class: "search", type: "search", placeholder: "Filter nodes by name or id", "aria-label": "Filter nodes" });
  const stateSel = h("select", { "aria-label": "Node state", class: "search" },
    h("option", { value: "" }, "all states"),
    ...["ready", "suspect", "draining", "down"].map((s) => h("option", { value: s }, s)));
  const box = h("div", { id: "nodes" });
  const pager = h("div", { class: "pager" });
  const head = h("div", { class: "section-head" }, h("h2", {}, "Nodes"), h("span", { class: "spacer" }), stateSel, search);
  const el = h("section", { class: "section" }, head, box, pager);

  async function load() {
    const { data, total } = await api("GET", "/api/v1/nodes", { query: { limit: PAGE, offset, q, state: stateFilter || undefined } });
    fetchedAt = performance.now();
    box.replaceChildren(table(NODE_HEADERS, data.map((n) => nodeRow(app, n, () => refresh())),
      { wide: true, empty: q || stateFilter ? "No node matches." : "No nodes yet: start an agent (dockyard agent)." }));
    const end = Math.min(offset + data.length, total);
    pager.replaceChildren(
      h("span", { id: "nodes-range" }, total ? `${fmtInt(offset + 1)}–${fmtInt(end)} of ${fmtInt(total)}` : "0 nodes"),
      h("button", { class: "btn small", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); refresh(); } }, "‹ Prev"),
      h("button", { class: "btn small", disabled: end >= total, onclick: () => { offset += PAGE; refresh(); } }, "Next ›"),
    );
    onLoaded(data);
  }
  const refresh = throttle(() => load().catch((exc) => app.toast(`Nodes: ${exc.message}`, true)), 1000);
  search.addEventListener("input", throttle(() => { q = search.value.trim(); offset = 0; return load(); }, 300));
  stateSel.addEventListener("change", () => { stateFilter = stateSel.value; offset = 0; refresh(); });

  function tick() {
    const extra = (performance.now() - fetchedAt) / 1000;
    for (const cell of box.querySelectorAll("td.hb")) paintHb(cell, Number(cell.dataset.age) + extra);
  }
  return { el, load, refresh, tick };
}

export function mount(root, app) {
  let alive = true;
  const list = nodeList(app);
  root.append(list.el);
  const tick = setInterval(() => list.tick(), 1000);
  const periodic = setInterval(() => { if (!document.hidden && alive) list.refresh(); }, 5000);
  list.load().catch((exc) => app.toast(`Nodes: ${exc.message}`, true));
  return {
    onEvents(rows) { if (rows.some((e) => e.node_id)) list.refresh(); },
    reload() { list.refresh(); },
    unmount() { alive = false; list.refresh.cancel(); clearInterval(tick); clearInterval(periodic); },
  };
}
