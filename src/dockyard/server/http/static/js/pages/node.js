// Node detail: capacity and allocations, heartbeat, labels, GPUs, images, its
// placed tasks, CPU and memory over time, and Drain/Undrain for admins.

import { ApiError, api, get } from "../api.js";
import { badge, fmtBytes, fmtCpu, fmtTime, h, table, taskLink, throttle } from "../dom.js";
import { usagePanel } from "../chart.js";
import { cpuCell, drainButton, gpuCell, labelChips, memoryCell, paintHb } from "./nodes.js";

export function mount(root, app, { args }) {
  const ref = args[0];
  let alive = true;
  let node = null;
  let fetchedAt = performance.now();

  const title = h("div", { class: "title-row" });
  const info = h("div", { class: "card section", id: "node-info" });
  const capacity = h("div", { class: "card section", id: "node-capacity" });
  const tasksBox = h("div", { id: "node-tasks" });
  const usage = usagePanel(`/api/v1/nodes/${encodeURIComponent(ref)}/usage`, { title: "Host CPU and memory", id: "node-usage" });

  root.append(
    h("a", { class: "crumb", href: "#/nodes" }, "← Nodes"), title,
    h("div", { class: "grid-2col" },
      h("div", {},
        usage.el,
        h("section", { class: "section" },
          h("div", { class: "section-head" }, h("h2", {}, "Placed tasks"), h("span", { class: "muted", id: "node-task-count" })),
          tasksBox)),
      h("div", {}, capacity, info)),
  );

  function kv(pairs) {
    const dl = h("dl", { class: "kv" });
    for (const [k, v] of pairs) dl.append(h("dt", {}, k), h("dd", { dataset: { field: k } }, v ?? "–"));
    return dl;
  }

  function render(n) {
    node = n;
    fetchedAt = performance.now();
    title.replaceChildren(...[
      h("h1", { id: "node-name" }, n.name),
      h("span", { id: "node-state" }, badge(n.state)),
      h("span", { class: "muted mono" }, n.id),
      h("span", { class: "spacer" }),
      drainButton(app, n, () => refresh()), // null for users
    ].filter(Boolean));
    const hb = h("span", { class: "hb", id: "node-heartbeat", dataset: { age: String(n.heartbeat_age_s) } });
    paintHb(hb, n.heartbeat_age_s);
    capacity.replaceChildren(h("h3", {}, "Capacity"), kv([
      ["CPU", h("div", { class: "usage cpu" }, cpuCell(n))],
      ["Memory", h("div", { class: "usage memory" }, memoryCell(n))],
      ["GPUs", h("div", { class: "usage gpu" }, gpuCell(n))],
      ["Cores", `${fmtCpu(n.allocated_cpu)} of ${fmtCpu(n.cpu)} allocated`],
      ["Memory held", `${fmtBytes(n.allocated_memory_bytes)} of ${fmtBytes(n.memory_bytes)} allocated`],
    ]));
    const uuids = Object.entries(n.gpu_uuids || {});
    info.replaceChildren(h("h3", {}, "Node"), kv([
      ["State", badge(n.state)],
      ["Draining", n.draining ? "yes: no new tasks; running jobs move at the deadline" : "no"],
      ["Heartbeat", [hb, h("span", { class: "muted" }, ` ago (${fmtTime(n.last_heartbeat_at)})`)]],
      ["Address", h("span", { class: "mono" }, n.address)],
      ["Driver", n.driver],
      ["Labels", labelChips(n.labels) || "–"],
      ["GPU devices", n.gpus && n.gpus.length ? n.gpus.join(", ") : "–"],
      ["GPU UUIDs", uuids.length ? uuids.map(([i, u]) => h("div", { class: "mono" }, `${i}: ${u}`)) : "–"],
      ["Images", n.images && n.images.length ? h("div", { class: "mono wrap-list" }, n.images.slice(0, 50).join(", ")) : "–"],
    ]));
  }

  async function loadTasks() {
    if (!node) return;
    const { data, total } = await api("GET", "/api/v1/tasks", { query: { node: node.id, active: true, limit: 50 } });
    if (!alive) return;
    document.getElementById("node-task-count").textContent = total === null ? "" : `${total} placed${total > 50 ? " (first 50)" : ""}`;
    tasksBox.replaceChildren(table(["Task", "Owner", "State", ["CPU", "num"], ["Memory", "num"], ["GPUs", "num"]],
      data.map((t) => h("tr", { dataset: { task: t.name, taskId: t.id } },
        h("td", {}, taskLink(t.id, t.name), h("div", { class: "muted mono" }, t.id)),
        h("td", {}, t.owner),
        h("td", {}, badge(t.state)),
        h("td", { class: "num" }, fmtCpu(t.cpu)),
        h("td", { class: "num" }, fmtBytes(t.memory_bytes)),
        h("td", { class: "num" }, String(t.gpus || 0)))),
      { empty: "No tasks placed here." }));
  }

  async function load() {
    try {
      const n = await get(`/api/v1/nodes/${encodeURIComponent(ref)}`);
      if (!alive) return;
      render(n);
      await Promise.all([loadTasks(), usage.refresh()]);
    } catch (exc) {
      if (!alive) return;
      if (exc instanceof ApiError && exc.status === 404) {
        title.replaceChildren(h("h1", {}, "Node not found"));
        info.replaceChildren(h("p", { class: "muted" }, `No node ${ref}.`));
        return;
      }
      app.toast(`Node: ${exc.message}`, true);
    }
  }

  const refresh = throttle(load, 1000);
  const tick = setInterval(() => {
    const hb = document.getElementById("node-heartbeat");
    if (hb) paintHb(hb, Number(hb.dataset.age) + (performance.now() - fetchedAt) / 1000);
  }, 1000);
  const periodic = setInterval(() => { if (!document.hidden) refresh(); }, 10000);
  load();

  return {
    onEvents(rows) { if (node && rows.some((e) => e.node_id === node.id)) refresh(); },
    reload() { refresh(); },
    unmount() { alive = false; refresh.cancel(); clearInterval(tick); clearInterval(periodic); usage.destroy(); },
  };
}
