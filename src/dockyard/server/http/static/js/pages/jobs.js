// Jobs: running, queued (position, estimated start and why pending) and history
// (exit code and reason), paginated with the API's limit/offset and X-Total-Count.

import { api, get } from "../api.js";
import { badge, fmtBytes, fmtCpu, fmtDuration, fmtInt, fmtTime, h, table, taskLink, throttle } from "../dom.js";

const PAGE = 50;

// Ask, then request the kill; the page refreshes (used here and on the task page).
export async function killTask(app, t, refresh) {
  if (!(await app.confirm(`Kill ${t.name} (${t.id})?`, "Kill"))) return;
  try {
    await api("POST", `/api/v1/tasks/${encodeURIComponent(t.id)}/kill`);
    app.toast(`Kill requested for ${t.name}`);
    refresh();
  } catch (exc) {
    app.toast(`Kill failed: ${exc.message}`, true);
  }
}
// The queue's estimated start (GET /api/v1/queue's estimated_start, from backfill
// reservations and declared runtimes): "now", "in 9m 59s", or "–" (no estimate).
function fmtEta(start, now) {
  if (start === null || start === undefined) return "–";
  const wait = start - now;
  return wait <= 1 ? "now" : `in ${fmtDuration(wait)}`;
}

export const TABS = {
  running: { label: "Running", states: ["assigned", "pulling", "starting", "running"], order: "newest" },
  queued: { label: "Queued", states: ["pending"], order: "oldest" },
  history: { label: "History", states: ["succeeded", "failed", "killed", "lost", "expired"], order: "newest" },
};

export function mount(root, app, { params }) {
  let tab = TABS[params.get("tab")] ? params.get("tab") : "running";
  let page = Math.max(0, Number(params.get("page") || 0) | 0);
  let q = params.get("q") || "";
  let alive = true;

  const tabs = h("div", { class: "tabs", role: "tablist" });
  const search = h("input", { class: "search", type: "search", placeholder: "Name or id prefix", value: q, "aria-label": "Filter tasks" });
  const box = h("div", { id: "jobs-table" });
  const queueBar = h("div", { class: "section-head queue-bar", id: "queue-bar", hidden: true });
  const pager = h("div", { class: "pager", id: "jobs-pager" });
  root.append(
    h("div", { class: "section-head" }, h("h1", {}, "Jobs"), h("span", { class: "spacer" }), search),
    tabs, queueBar, box, pager,
  );

  function setUrl() {
    const qs = new URLSearchParams({ tab });
    if (page) qs.set("page", String(page));
    if (q) qs.set("q", q);
    history.replaceState(null, "", `#/jobs?${qs}`);
  }

  function renderTabs(counts) {
    tabs.replaceChildren(...Object.entries(TABS).map(([key, t]) => {
      const n = counts ? t.states.reduce((acc, s) => acc + (counts[s] || 0), 0) : null;
      return h("button", {
        class: `tab${key === tab ? " active" : ""}`, role: "tab", "aria-selected": key === tab ? "true" : "false",
        dataset: { tab: key },
        onclick: () => { tab = key; page = 0; setUrl(); refresh(); },
      }, t.label, n === null ? null : h("span", { class: "count" }, fmtInt(n)));
    }));
  }

  function killButton(t) {
    if (t.desired_state === "stop") return h("span", { class: "muted" }, "stopping…");
    return h("button", {
      class: "btn small", dataset: { action: "kill", task: t.name },
      onclick: () => killTask(app, t, refresh),
    }, "Kill");
  }

  function nameCell(t) {
    return h("td", {}, taskLink(t.id, t.name), h("div", { class: "muted mono" }, t.id));
  }

  function row(t, i) {
    const attrs = { dataset: { task: t.name, taskId: t.id, state: t.state } };
    if (tab === "queued") {
      const since = t.submitted_at ?? t.created_at;
      return h("tr", { dataset: { task: t.name, taskId: t.id, state: "pending" } },
        h("td", { class: "num position" }, t.position ? String(t.position) : "–"),
        nameCell(t), h("td", {}, t.owner),
        h("td", { class: "num" }, String(t.priority ?? 0)),
        h("td", { class: "num" }, fmtCpu(t.cpu)), h("td", { class: "num" }, fmtBytes(t.memory_bytes)),
        h("td", { class: "num" }, t.gpus ? String(t.gpus) : "–"),
        h("td", { class: "num uptime", dataset: { since: String(since) } }, fmtDuration(Date.now() / 1000 - since)),
        h("td", {
          class: "num eta",
          dataset: { start: t.estimated_start === null || t.estimated_start === undefined ? "" : String(t.estimated_start) },
          title: t.estimated_start ? `estimated start ${fmtTime(t.estimated_start)} (from declared runtimes)` : "no estimate: waits on work without a declared runtime",
        }, fmtEta(t.estimated_start, Date.now() / 1000)),
        h("td", { class: "wrap why" }, t.message || t.reason || "waiting for the scheduler"),
        h("td", {}, killButton(t)));
    }
    if (tab === "running") {
      return h("tr", attrs,
        nameCell(t), h("td", {}, t.owner), h("td", {}, badge(t.state)), h("td", {}, t.node || "–"),
        h("td", { class: "num" }, fmtCpu(t.cpu)), h("td", { class: "num" }, fmtBytes(t.memory_bytes)),
        h("td", { class: "num uptime", dataset: { since: String(t.started_at || "") } }, t.started_at ? fmtDuration(t.uptime_s) : "–"),
        h("td", { class: "mono" }, t.image),
        h("td", {}, killButton(t)));
    }
    return h("tr", attrs,
      nameCell(t), h("td", {}, t.owner), h("td", {}, badge(t.state)),
      h("td", { class: "num exit" }, t.exit_code === null ? "–" : String(t.exit_code)),
      h("td", { class: "wrap" }, t.reason || "–", t.message ? h("div", { class: "muted" }, t.message) : null),
      h("td", {}, t.node || "–"),
      h("td", { class: "mono" }, fmtTime(t.finished_at)),
      h("td", { class: "num" }, t.uptime_s === null ? "–" : fmtDuration(t.uptime_s)));
  }

  const HEADERS = {
    queued: [["#", "num"], "Name", "Owner", ["Prio", "num"], ["CPU", "num"], ["Memory", "num"], ["GPU", "num"], ["Waiting", "num"], ["Starts", "num"], "Why pending", ""],
    running: ["Name", "Owner", "State", "Node", ["CPU", "num"], ["Memory", "num"], ["Uptime", "num"], "Image", ""],
    history: ["Name", "Owner", "State", ["Exit", "num"], "Reason", "Node", "Finished", ["Ran", "num"]],
  };

  /** The queue in the scheduler's order (priority, fair share, age) with real positions. */
  async function loadQueue() {
    const res = await get("/api/v1/queue", { limit: (page + 1) * PAGE });
    renderLock(res.locked, res.locked_by);
    return { data: res.entries.slice(page * PAGE), total: res.total };
  }

  function renderLock(locked, by) {
    const parts = [];
    if (locked) parts.push(h("span", { class: "badge pending", id: "queue-locked" }, "queue locked"), ` by ${by || "an admin"}: queued jobs are not started.`);
    else parts.push(h("span", { class: "muted" }, "Queue order: priority, then fair share, then age."));
    if (app.me.admin) {
      parts.push(h("span", { class: "spacer" }), h("button", {
        class: "btn small", dataset: { action: locked ? "unlock" : "lock" },
        onclick: async () => {
          if (!(await app.confirm(locked ? "Unlock the queue? Queued jobs start again." : "Lock the queue? Nothing new starts until it is unlocked.", locked ? "Unlock" : "Lock"))) return;
          try {
            await api("POST", `/api/v1/queue/${locked ? "unlock" : "lock"}`);
            refresh();
          } catch (exc) { app.toast(`Queue: ${exc.message}`, true); }
        },
      }, locked ? "Unlock queue" : "Lock queue"));
    }
    queueBar.replaceChildren(...parts);
    queueBar.hidden = false;
  }

  async function load() {
    if (!alive) return;
    const t = TABS[tab];
    try {
      const listing = tab === "queued" && !q
        ? loadQueue()
        : api("GET", "/api/v1/tasks", { query: { state: t.states, order: t.order, limit: PAGE, offset: page * PAGE, q: q || undefined } });
      if (tab !== "queued" || q) queueBar.hidden = true;
      const [res, summary] = await Promise.all([listing, get("/api/v1/summary")]);
      if (!alive) return;
      renderTabs(summary.tasks_by_state);
      const total = res.total ?? res.data.length;
      if (page > 0 && page * PAGE >= total) { page = Math.max(0, Math.ceil(total / PAGE) - 1); setUrl(); return load(); }
      box.replaceChildren(table(HEADERS[tab], res.data.map(row), {
        empty: q ? "No task matches." : { running: "Nothing running.", queued: "The queue is empty.", history: "No finished tasks yet." }[tab],
      }));
      const end = page * PAGE + res.data.length;
      pager.replaceChildren(
        h("span", { id: "jobs-range" }, total ? `${fmtInt(page * PAGE + 1)}–${fmtInt(end)} of ${fmtInt(total)}` : "0 tasks"),
        h("button", { class: "btn small", disabled: page === 0, dataset: { page: "prev" }, onclick: () => { page -= 1; setUrl(); refresh(); } }, "‹ Prev"),
        h("button", { class: "btn small", disabled: end >= total, dataset: { page: "next" }, onclick: () => { page += 1; setUrl(); refresh(); } }, "Next ›"),
      );
    } catch (exc) {
      if (alive) app.toast(`Jobs: ${exc.message}`, true);
    }
  }

  const refresh = throttle(load, 1000);
  search.addEventListener("input", throttle(() => { q = search.value.trim(); page = 0; setUrl(); return load(); }, 300));
  const tick = setInterval(() => {
    const now = Date.now() / 1000;
    for (const cell of box.querySelectorAll("td.uptime")) {
      const since = Number(cell.dataset.since);
      if (since) cell.textContent = fmtDuration(now - since);
    }
    for (const cell of box.querySelectorAll("td.eta")) {
      if (cell.dataset.start) cell.textContent = fmtEta(Number(cell.dataset.start), now);
    }
  }, 1000);

  renderTabs(null);
  load();

  return {
    onEvents(rows) { if (rows.some((e) => e.task_id)) refresh(); },
    reload() { refresh(); },
    unmount() { alive = false; refresh.cancel(); clearInterval(tick); },
  };
}
