// Overview: cluster totals, tasks by state, nodes (paginated, searchable) with
// usage bars and heartbeat age, and the most recent events.

import { api, get } from "../api.js";
import { badge, fmtBytes, fmtCpu, fmtDuration, fmtInt, h, table, throttle, usageBar } from "../dom.js";
import { eventRow, EVENT_HEADERS } from "./events.js";

const PAGE = 50;
const RECENT = 12;
const PERIODIC_MS = 5000; // node usage changes without events: refresh this often while visible

export function mount(root, app) {
  let offset = 0;
  let q = "";
  let stateFilter = "";
  let nodesFetchedAt = performance.now();
  let alive = true;

  const stats = h("div", { class: "stats", id: "stats" });
  const chips = h("div", { class: "chips", id: "task-chips" });
  const search = h("input", { class: "search", type: "search", placeholder: "Filter nodes by name or id", "aria-label": "Filter nodes" });
  const stateSel = h("select", { "aria-label": "Node state", class: "search" },
    h("option", { value: "" }, "all states"),
    ...["ready", "suspect", "draining", "down"].map((s) => h("option", { value: s }, s)));
  const nodesBox = h("div", { id: "nodes" });
  const pager = h("div", { class: "pager" });
  const recentBox = h("div", { id: "recent-events" });
  const recentRows = [];

  root.append(
    h("div", { class: "section" }, stats),
    h("div", { class: "section" }, h("div", { class: "section-head" }, h("h2", {}, "Tasks by state")), chips),
    h("div", { class: "grid-2col" },
      h("section", { class: "section" },
        h("div", { class: "section-head" }, h("h2", {}, "Nodes"), h("span", { class: "spacer" }), stateSel, search),
        nodesBox, pager),
      h("section", { class: "section" },
        h("div", { class: "section-head" }, h("h2", {}, "Recent events"), h("span", { class: "spacer" }), h("a", { href: "#/events" }, "all events →")),
        recentBox)),
  );

  function stat(label, value, sub, id) {
    return h("div", { class: "stat", id }, h("div", { class: "label" }, label), h("div", { class: "value" }, value), sub ? h("div", { class: "sub" }, sub) : null);
  }

  function renderSummary(s) {
    const n = s.nodes_by_state;
    const t = s.tasks_by_state;
    const active = (t.assigned || 0) + (t.pulling || 0) + (t.starting || 0) + (t.running || 0);
    stats.replaceChildren(
      stat("Nodes", `${fmtInt(n.ready)} / ${fmtInt(s.nodes)}`, `ready · ${n.suspect || 0} suspect · ${n.draining || 0} draining · ${n.down || 0} down`, "stat-nodes"),
      stat("CPU allocated", `${fmtCpu(s.allocated_cpu)} / ${fmtCpu(s.cpu)}`, "cores on live nodes", "stat-cpu"),
      stat("Memory allocated", fmtBytes(s.allocated_memory_bytes), `of ${fmtBytes(s.memory_bytes)}`, "stat-mem"),
      stat("Running", fmtInt(active), `${fmtInt(t.running || 0)} running now`, "stat-running"),
      stat("Queued", fmtInt(s.queue_depth), "pending placement", "stat-queued"),
      stat("Failed", fmtInt((t.failed || 0) + (t.lost || 0)), `${fmtInt(t.succeeded || 0)} succeeded`, "stat-failed"),
    );
    chips.replaceChildren(...Object.entries(t).map(([state, count]) =>
      h("a", { class: "chip", href: `#/jobs?tab=${tabFor(state)}`, dataset: { state } }, badge(state), fmtInt(count))));
  }

  function hbCell(node) {
    const cell = h("td", { class: "num hb", dataset: { age: String(node.heartbeat_age_s) } });
    paintHb(cell, node.heartbeat_age_s);
    return cell;
  }

  function paintHb(cell, age) {
    cell.textContent = fmtDuration(age);
    cell.classList.toggle("hb-stale", age >= 10 && age < 30);
    cell.classList.toggle("hb-dead", age >= 30);
  }

  function nodeRow(node) {
    const cpuUsed = (node.used_cpu_percent / 100) * node.cpu;
    const actions = h("td", {});
    if (app.me.admin) {
      const drain = node.draining
        ? h("button", { class: "btn small", dataset: { action: "undrain" }, onclick: () => drainAction(node, false) }, "Undrain")
        : h("button", { class: "btn small", dataset: { action: "drain" }, onclick: () => drainAction(node, true) }, "Drain");
      actions.appendChild(drain);
    }
    const gpus = Array.isArray(node.gpus) ? node.gpus : [];
    return h("tr", { dataset: { node: node.name, nodeId: node.id } },
      h("td", {}, h("div", { class: "node-name" }, node.name), h("div", { class: "muted mono" }, node.id),
        Object.keys(node.labels || {}).length
          ? h("div", { class: "labels" }, Object.entries(node.labels).map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`)))
          : null),
      h("td", {}, badge(node.state)),
      h("td", { class: "usage cpu" },
        usageBar({ used: cpuUsed, allocated: node.allocated_cpu, total: node.cpu, text: `${node.used_cpu_percent.toFixed(0)}% used` }),
        h("div", { class: "bar-sub" }, `${fmtCpu(node.allocated_cpu)} / ${fmtCpu(node.cpu)} cores allocated`)),
      h("td", { class: "usage memory" },
        usageBar({ used: node.used_memory_bytes, allocated: node.allocated_memory_bytes, total: node.memory_bytes, text: `${fmtBytes(node.used_memory_bytes)} used` }),
        h("div", { class: "bar-sub" }, `${fmtBytes(node.allocated_memory_bytes)} / ${fmtBytes(node.memory_bytes)} allocated`)),
      h("td", { class: "usage gpu" }, gpus.length
        ? (Array.isArray(node.gpus_allocated)
          ? [usageBar({ allocated: node.gpus_allocated.length, total: gpus.length, text: `${node.gpus_allocated.length} / ${gpus.length}` }),
             h("div", { class: "bar-sub" }, `GPUs allocated${node.gpus_allocated.length ? ` (${node.gpus_allocated.join(", ")})` : ""}`)]
          : [h("div", {}, `${gpus.length} GPU${gpus.length === 1 ? "" : "s"}`), h("div", { class: "bar-sub" }, `devices ${gpus.join(", ")}`)])
        : h("span", { class: "muted" }, "–")),
      h("td", { class: "num" }, String(node.tasks)),
      hbCell(node),
      h("td", {}, node.driver),
      actions,
    );
  }

  async function drainAction(node, drain) {
    const ok = await app.confirm(drain
      ? `Drain ${node.name}? No new tasks are placed there; running jobs are stopped and moved after 60 s.`
      : `Undrain ${node.name}? It takes new tasks again.`, drain ? "Drain" : "Undrain");
    if (!ok) return;
    try {
      await api("POST", `/api/v1/nodes/${encodeURIComponent(node.id)}/${drain ? "drain" : "undrain"}`, { body: drain ? {} : undefined });
      app.toast(`${drain ? "Draining" : "Undrained"} ${node.name}`);
      refresh();
    } catch (exc) {
      app.toast(`${drain ? "Drain" : "Undrain"} failed: ${exc.message}`, true);
    }
  }

  async function loadNodes() {
    const { data, total } = await api("GET", "/api/v1/nodes", { query: { limit: PAGE, offset, q, state: stateFilter || undefined } });
    nodesFetchedAt = performance.now();
    nodesBox.replaceChildren(table(
      ["Node", "State", "CPU", "Memory", "GPU", ["Tasks", "num"], ["Heartbeat", "num"], "Driver", ""],
      data.map(nodeRow),
      { empty: q || stateFilter ? "No node matches." : "No nodes yet: start an agent (dockyard agent)." },
    ));
    const end = Math.min(offset + data.length, total);
    pager.replaceChildren(
      h("span", { id: "nodes-range" }, total ? `${fmtInt(offset + 1)}–${fmtInt(end)} of ${fmtInt(total)}` : "0 nodes"),
      h("button", { class: "btn small", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); refresh(); } }, "‹ Prev"),
      h("button", { class: "btn small", disabled: end >= total, onclick: () => { offset += PAGE; refresh(); } }, "Next ›"),
    );
  }

  async function loadRecent() {
    const rows = await get("/api/v1/events", { order: "desc", limit: RECENT });
    recentRows.splice(0, recentRows.length, ...rows);
    renderRecent();
  }

  function renderRecent() {
    recentBox.replaceChildren(table(EVENT_HEADERS.compact, recentRows.map((e) => eventRow(e, true)), { empty: "No events yet." }));
  }

  async function load() {
    if (!alive) return;
    try {
      const [summary] = await Promise.all([get("/api/v1/summary"), loadNodes()]);
      if (!alive) return;
      renderSummary(summary);
    } catch (exc) {
      if (alive) app.toast(`Refresh failed: ${exc.message}`, true);
    }
  }

  const refresh = throttle(load, 1000);
  search.addEventListener("input", throttle(() => { q = search.value.trim(); offset = 0; return load(); }, 300));
  stateSel.addEventListener("change", () => { stateFilter = stateSel.value; offset = 0; refresh(); });

  const tick = setInterval(() => {
    const extra = (performance.now() - nodesFetchedAt) / 1000;
    for (const cell of nodesBox.querySelectorAll("td.hb")) paintHb(cell, Number(cell.dataset.age) + extra);
  }, 1000);
  const periodic = setInterval(() => { if (!document.hidden) refresh(); }, PERIODIC_MS);

  load();
  loadRecent().catch(() => {});

  return {
    onEvents(rows) {
      recentRows.unshift(...rows.slice().reverse());
      recentRows.splice(RECENT);
      renderRecent();
      refresh();
    },
    reload() { load(); loadRecent().catch(() => {}); },
    unmount() {
      alive = false;
      refresh.cancel();
      clearInterval(tick);
      clearInterval(periodic);
    },
  };
}

export function tabFor(state) {
  if (state === "pending") return "queued";
  if (["assigned", "pulling", "starting", "running"].includes(state)) return "running";
  return "history";
}
