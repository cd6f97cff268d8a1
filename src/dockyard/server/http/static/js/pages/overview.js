// Overview: cluster totals, tasks by state, CPU and memory of the tasks you may
// see over time, nodes (paginated, searchable) with usage bars and heartbeat age,
// and the most recent events.

import { get } from "../api.js";
import { usagePanel } from "../chart.js";
import { badge, fmtBytes, fmtCpu, fmtInt, h, table, throttle } from "../dom.js";
import { eventRow, EVENT_HEADERS } from "./events.js";
import { nodeList } from "./nodes.js";

const RECENT = 12;
const PERIODIC_MS = 5000; // node usage changes without events: refresh this often while visible

export function mount(root, app) {
  let alive = true;

  const stats = h("div", { class: "stats", id: "stats" });
  const chips = h("div", { class: "chips", id: "task-chips" });
  const nodes = nodeList(app);
  const recentBox = h("div", { id: "recent-events" });
  const recentRows = [];
  const usage = usagePanel("/api/v1/usage", {
    title: app.me.admin ? "CPU and memory of all tasks" : "CPU and memory of your tasks",
    id: "overview-usage",
  });

  root.append(
    h("div", { class: "section" }, stats),
    h("div", { class: "section" }, h("div", { class: "section-head" }, h("h2", {}, "Tasks by state")), chips),
    usage.el,
    nodes.el,
    h("section", { class: "section" },
      h("div", { class: "section-head" }, h("h2", {}, "Recent events"), h("span", { class: "spacer" }), h("a", { href: "#/events" }, "all events →")),
      recentBox),
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
      const [summary] = await Promise.all([get("/api/v1/summary"), nodes.load()]);
      if (!alive) return;
      renderSummary(summary);
    } catch (exc) {
      if (alive) app.toast(`Refresh failed: ${exc.message}`, true);
    }
  }

  const refresh = throttle(load, 1000);
  const tick = setInterval(() => nodes.tick(), 1000);
  const periodic = setInterval(() => { if (!document.hidden) { refresh(); usage.refresh(); } }, PERIODIC_MS);

  load();
  usage.refresh();
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
      nodes.refresh.cancel();
      clearInterval(tick);
      clearInterval(periodic);
      usage.destroy();
    },
  };
}

export function tabFor(state) {
  if (state === "pending") return "queued";
  if (["assigned", "pulling", "starting", "running"].includes(state)) return "running";
  return "history";
}
