// Task detail: state, spec, resources, CPU and memory over time, events, and
// logs that follow live (search, stream toggle, ANSI colours, download).

import { ApiError, followLogs, get } from "../api.js";
import { usagePanel } from "../chart.js";
import { badge, fmtBytes, fmtCpu, fmtDuration, fmtTime, h, table, throttle } from "../dom.js";
import { logViewer } from "../logview.js";
import { killTask } from "./jobs.js";
import { tabFor } from "./overview.js";

const TERMINAL = new Set(["succeeded", "failed", "killed", "lost", "expired"]);

function pendingText(d) {
  const reasons = Object.entries(d.reasons || {}).map(([why, n]) => `${n} ${why}`).join(", ");
  return `${d.fit ?? 0}/${d.total ?? "?"} nodes fit${reasons ? `: ${reasons}` : ""}`;
}

function restartText(r) {
  if (!r || !r.mode) return "never";
  if (r.mode === "never") return "never";
  const attempts = r.max_attempts === null || r.max_attempts === undefined ? "unlimited" : `max ${r.max_attempts}`;
  return `${r.mode} (${attempts}, back-off ${r.initial_delay_s}–${r.max_delay_s} s)`;
}

export function mount(root, app, { args }) {
  const ref = args[0];
  let alive = true;
  let task = null;
  let cursor = 0;
  let logsEnded = false;
  let following = null; // AbortController of the live log stream

  const title = h("div", { class: "title-row" });
  const crumb = h("a", { class: "crumb", href: "#/jobs" }, "← Jobs");
  const info = h("div", { class: "card section", id: "task-info" });
  const spec = h("div", { class: "card section", id: "task-spec" });
  const eventsBox = h("div", { id: "task-events" });
  const viewer = logViewer(() => task);
  const usage = usagePanel(`/api/v1/tasks/${encodeURIComponent(ref)}/usage`, { title: "CPU and memory", id: "task-usage" });
  let usageTimer = null;

  root.append(
    crumb, title,
    h("div", { class: "grid-2col" },
      h("div", {},
        viewer.el,
        usage.el,
        h("section", { class: "section" }, h("h2", {}, "Events"), eventsBox)),
      h("div", {}, info, spec)),
  );

  function kv(pairs) {
    const dl = h("dl", { class: "kv" });
    for (const [k, v] of pairs) dl.append(h("dt", {}, k), h("dd", { dataset: { field: k } }, v ?? "–"));
    return dl;
  }

  let titleKey = "";

  function render(t) {
    // The title row (with the Kill button) is rebuilt only when what it shows changes:
    // a live refresh that replaced the button between a user's mousedown and mouseup
    // swallowed the click (usage samples refresh a running task every few seconds).
    const key = JSON.stringify([t.name, t.state, t.id, t.desired_state]);
    if (key !== titleKey) {
      titleKey = key;
      renderTitle(t);
    }
    renderBody(t);
  }

  function renderTitle(t) {
    const actions = [];
    if (!TERMINAL.has(t.state) && t.desired_state !== "stop") {
      actions.push(h("button", {
        class: "btn danger", id: "task-kill", dataset: { action: "kill" },
        onclick: () => killTask(app, t, refresh),
      }, "Kill"));
    } else if (!TERMINAL.has(t.state)) {
      actions.push(h("span", { class: "muted" }, "stopping…"));
    }
    title.replaceChildren(
      h("h1", { id: "task-name" }, t.name),
      h("span", { id: "task-state" }, badge(t.state)),
      h("span", { class: "muted mono" }, t.id),
      h("span", { class: "spacer" }),
      ...actions,
    );
  }

  function renderBody(t) {
    crumb.setAttribute("href", `#/jobs?tab=${tabFor(t.state)}`);
    info.replaceChildren(h("h3", {}, "Status"), kv([
      ["State", badge(t.state)],
      ["Reason", t.reason || "–"],
      ["Message", t.message || "–"],
      ...(t.pending_detail && t.state === "pending" ? [["Why pending", pendingText(t.pending_detail)]] : []),
      ["Exit code", t.exit_code === null ? "–" : String(t.exit_code)],
      ["Owner", t.owner],
      ["Node", t.node_id ? h("a", { href: `#/nodes/${encodeURIComponent(t.node_id)}`, id: "task-node" }, t.node || t.node_id) : "–"],
      ["Attempt", String(t.attempt)],
      ["Submitted", fmtTime(t.created_at)],
      ["Started", fmtTime(t.started_at)],
      ["Finished", fmtTime(t.finished_at)],
      ["Uptime", t.uptime_s === null ? "–" : fmtDuration(t.uptime_s)],
      ["CPU time", `${t.cpu_seconds.toFixed(2)} s`],
      ["Peak memory", fmtBytes(t.max_memory_bytes)],
      ["Container", t.container_id ? t.container_id.slice(0, 12) : "–"],
    ]));
    const envLines = Object.entries(t.env || {}).map(([k, v]) => h("div", { class: "mono" }, `${k}=${v}`));
    spec.replaceChildren(h("h3", {}, "Spec"), kv([
      ["Image", h("span", { class: "mono" }, t.image)],
      ["Command", t.command.length ? h("span", { class: "mono", id: "task-command" }, JSON.stringify(t.command)) : "image default"],
      ["CPU", `${fmtCpu(t.cpu)} cores`],
      ["Memory", fmtBytes(t.memory_bytes)],
      ["GPUs", t.gpus ? `${t.gpus}${t.gpu_indices && t.gpu_indices.length ? ` (devices ${t.gpu_indices.join(", ")})` : ""}` : "–"],
      ["Priority", String(t.priority ?? 0)],
      ["Constraints", t.constraints && t.constraints.length ? t.constraints.join(", ") : "–"],
      ["Ports", t.ports && t.ports.length ? t.ports.join(", ") : "–"],
      ["Restart", restartText(t.restart)],
      ["Kill grace", `${t.kill_grace_s} s`],
      ["Max runtime", t.max_runtime_s ? fmtDuration(t.max_runtime_s) : "–"],
      ["Environment", envLines.length ? h("div", { id: "task-env" }, envLines) : "–"],
      ["Replaces", t.previous_task_id ? h("a", { href: `#/task/${encodeURIComponent(t.previous_task_id)}` }, t.previous_task_id) : "–"],
    ]));
    eventsBox.replaceChildren(table(["Time", "Reason", "Message"], t.events.slice().reverse().map((e) =>
      h("tr", { dataset: { reason: e.reason } },
        h("td", { class: "mono" }, fmtTime(e.at)),
        h("td", {}, h("span", { class: "badge kind" }, e.reason)),
        h("td", { class: "wrap" }, e.message))), { empty: "No events." }));
  }

  async function load() {
    try {
      const t = await get(`/api/v1/tasks/${encodeURIComponent(ref)}`);
      if (!alive) return;
      task = t;
      render(t);
      if (!following && !logsEnded) startLogs();
      if (usageTimer === null) {
        usage.refresh();
        // while it runs, a new 10 s bucket lands every 10 s
        usageTimer = setInterval(() => { if (!document.hidden && task && !TERMINAL.has(task.state)) usage.refresh(); }, 10000);
      }
    } catch (exc) {
      if (!alive) return;
      if (exc instanceof ApiError && exc.status === 404) {
        title.replaceChildren(h("h1", {}, "Task not found"));
        info.replaceChildren(h("p", { class: "muted" }, `No task ${ref} that you may see.`));
        return;
      }
      app.toast(`Task: ${exc.message}`, true);
    }
  }

  // -- logs -------------------------------------------------------------------
  async function startLogs() {
    if (!task) return;
    following = new AbortController();
    viewer.setStatus(TERMINAL.has(task.state) ? "" : "following");
    let retry = 1000;
    while (alive && !logsEnded) {
      try {
        await followLogs(task.id, cursor, {
          signal: following.signal,
          onLine: (line) => { cursor = Math.max(cursor, line.id); viewer.add(line); },
          onEnd: (state) => { logsEnded = true; viewer.end(state); },
        });
        if (!logsEnded && alive) await new Promise((r) => setTimeout(r, retry));
      } catch (exc) {
        if (!alive || exc.name === "AbortError") return;
        viewer.setStatus(`reconnecting (${exc.message})`);
        await new Promise((r) => setTimeout(r, retry));
        retry = Math.min(retry * 2, 10000);
      }
    }
    viewer.finish(logsEnded);
  }

  const refresh = throttle(load, 700);
  load();

  return {
    onEvents(rows) {
      if (task && rows.some((e) => e.task_id === task.id)) refresh();
    },
    reload() { refresh(); },
    unmount() {
      alive = false;
      refresh.cancel();
      if (following) following.abort();
      if (usageTimer !== null) clearInterval(usageTimer);
      usage.destroy();
    },
  };
}
