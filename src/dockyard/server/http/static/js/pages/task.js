// Task detail: state, spec, resources, events, and logs that follow live.

import { ApiError, followLogs, get } from "../api.js";
import { badge, fmtBytes, fmtCpu, fmtDuration, fmtTime, h, table, throttle } from "../dom.js";
import { killTask } from "./jobs.js";
import { tabFor } from "./overview.js";

const MAX_LINES = 5000; // lines kept on screen; older ones are dropped (the API keeps them all)
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
  const logs = h("div", { class: "logs", id: "task-logs", role: "log", "aria-live": "off", tabindex: "0" });
  const logStatus = h("span", { class: "muted", id: "log-status" }, "");
  let lineCount = 0;

  root.append(
    crumb, title,
    h("div", { class: "grid-2col" },
      h("div", {},
        h("section", { class: "section" },
          h("div", { class: "section-head" }, h("h2", {}, "Logs"), logStatus),
          logs),
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
      ["Node", t.node || "–"],
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
  function atBottom() { return logs.scrollHeight - logs.scrollTop - logs.clientHeight < 30; }

  function addLine(line) {
    cursor = Math.max(cursor, line.id);
    const stick = atBottom();
    const el = h("span", { class: `line ${line.stream === "stderr" ? "stderr" : "stdout"}`, dataset: { seq: String(line.seq) } },
      h("span", { class: "ts" }, (line.ts || "").slice(11, 19)), line.line);
    logs.appendChild(el);
    lineCount += 1;
    if (lineCount > MAX_LINES) {
      logs.firstElementChild?.remove();
      lineCount -= 1;
    }
    if (stick) logs.scrollTop = logs.scrollHeight;
  }

  async function startLogs() {
    if (!task) return;
    following = new AbortController();
    logStatus.textContent = TERMINAL.has(task.state) ? "" : "following";
    let retry = 1000;
    while (alive && !logsEnded) {
      try {
        await followLogs(task.id, cursor, {
          signal: following.signal,
          onLine: addLine,
          onEnd: (state) => {
            logsEnded = true;
            logs.appendChild(h("span", { class: "line end" }, `— task ended: ${state} —`));
            if (atBottom()) logs.scrollTop = logs.scrollHeight;
          },
        });
        if (!logsEnded && alive) await new Promise((r) => setTimeout(r, retry));
      } catch (exc) {
        if (!alive || exc.name === "AbortError") return;
        logStatus.textContent = `reconnecting (${exc.message})`;
        await new Promise((r) => setTimeout(r, retry));
        retry = Math.min(retry * 2, 10000);
      }
    }
    logStatus.textContent = lineCount ? `${lineCount} lines` : "no output";
    if (!lineCount && logsEnded && logs.childElementCount === 1) {
      logs.prepend(h("span", { class: "line note" }, "(no output)"));
    }
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
    },
  };
}
