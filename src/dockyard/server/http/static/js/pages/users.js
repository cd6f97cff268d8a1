// Users: tasks and usage per user (admins see everyone, users themselves).

import { get } from "../api.js";
import { fmtInt, h, table, throttle } from "../dom.js";

function quotaText(quota) {
  const parts = Object.entries(quota || {}).map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join(", ") : "none";
}

export function mount(root, app) {
  let alive = true;
  const box = h("div", { id: "users" });
  root.append(
    h("div", { class: "section-head" }, h("h1", {}, "Users"),
      h("span", { class: "muted" }, app.me.admin ? "every user's tasks and usage in their quota period" : "your tasks and usage")),
    box,
    h("p", { class: "muted" }, "Fair-share standing appears here once the scheduler exposes it."),
  );

  async function load() {
    try {
      const rows = await get("/api/v1/users/stats");
      if (!alive) return;
      box.replaceChildren(table(
        ["User", ["Running", "num"], ["Queued", "num"], ["Finished", "num"], ["CPU hours", "num"], ["Memory GiB·h", "num"], "Quota", ["Quota CPU h used", "num"]],
        rows.map((u) => h("tr", { dataset: { user: u.name } },
          h("td", {}, u.name),
          h("td", { class: "num" }, fmtInt(u.running)),
          h("td", { class: "num" }, fmtInt(u.queued)),
          h("td", { class: "num" }, fmtInt(u.finished)),
          h("td", { class: "num" }, (u.cpu_seconds / 3600).toFixed(3)),
          h("td", { class: "num" }, (u.memory_gib_s / 3600).toFixed(3)),
          h("td", { class: "wrap mono" }, quotaText(u.quota)),
          h("td", { class: "num" }, u.quota_cpu_hours_used.toFixed(3)))),
        { empty: "No users." },
      ));
    } catch (exc) {
      if (alive) app.toast(`Users: ${exc.message}`, true);
    }
  }

  const refresh = throttle(load, 2000);
  load();
  return {
    onEvents(rows) { if (rows.some((e) => e.task_id)) refresh(); },
    reload() { refresh(); },
    unmount() { alive = false; refresh.cancel(); },
  };
}
