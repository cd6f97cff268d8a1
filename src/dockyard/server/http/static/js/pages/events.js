// Events feed: every state change with its reason, newest first, live.

import { get } from "../api.js";
import { badge, fmtTime, h, table, taskLink } from "../dom.js";

const PAGE = 100;
const MAX_ROWS = 1000; // keep the DOM small: older rows are dropped (load them again with "older")

export const EVENT_HEADERS = {
  full: ["Time", "Kind", "Reason", "Task", "State now", "Node", "Message"],
  compact: ["Time", "Reason", "Task / node"],
};

const BAD = new Set(["failed", "exit_nonzero", "oom_killed", "node_lost", "image_not_found", "image_pull_failed",
  "start_failed", "quota_exceeded", "forced_kill", "max_lifetime_exceeded", "node_down"]);

function reasonBadge(reason) {
  return h("span", { class: `badge ${BAD.has(reason) ? "failed" : "kind"}` }, reason || "–");
}

/** One event as a table row; ``compact`` for the overview's short list. */
export function eventRow(e, compact = false) {
  const what = e.task_id ? taskLink(e.task_id, e.task_name || e.task_id) : e.node_name || e.node_id || "–";
  if (compact) {
    return h("tr", { dataset: { eventId: String(e.id), reason: e.reason } },
      h("td", { class: "mono" }, fmtTime(e.at)),
      h("td", {}, reasonBadge(e.reason)),
      h("td", { class: "wrap" }, what, e.task_id && e.node_name ? h("span", { class: "muted" }, ` on ${e.node_name}`) : null));
  }
  return h("tr", { dataset: { eventId: String(e.id), reason: e.reason } },
    h("td", { class: "mono" }, fmtTime(e.at)),
    h("td", {}, h("span", { class: "badge kind" }, e.kind)),
    h("td", {}, reasonBadge(e.reason)),
    h("td", {}, e.task_id ? taskLink(e.task_id, e.task_name || e.task_id) : "–"),
    h("td", {}, e.task_state ? badge(e.task_state) : "–"),
    h("td", {}, e.node_name || e.node_id || "–"),
    h("td", { class: "wrap" }, e.message),
  );
}

export function mount(root, app) {
  let rows = [];
  let kind = "";
  let alive = true;
  const box = h("div", { id: "events" });
  const kindSel = h("select", { class: "search", "aria-label": "Event kind" },
    h("option", { value: "" }, "all kinds"),
    ...["task", "node", "user"].map((k) => h("option", { value: k }, k)));
  const older = h("button", { class: "btn", id: "events-older" }, "Load older");
  root.append(
    h("div", { class: "section-head" }, h("h1", {}, "Events"), h("span", { class: "muted" }, "live; newest first"), h("span", { class: "spacer" }), kindSel),
    box,
    h("div", { class: "pager" }, older),
  );

  function render() {
    box.replaceChildren(table(EVENT_HEADERS.full, rows.map((e) => eventRow(e)), { empty: "No events yet." }));
  }

  async function load() {
    const data = await get("/api/v1/events", { order: "desc", limit: PAGE, kind: kind || undefined });
    if (!alive) return;
    rows = data;
    older.disabled = data.length < PAGE;
    render();
  }

  older.addEventListener("click", async () => {
    if (!rows.length) return;
    const before = rows[rows.length - 1].id;
    const data = await get("/api/v1/events", { order: "desc", limit: PAGE, before, kind: kind || undefined });
    rows = rows.concat(data);
    older.disabled = data.length < PAGE;
    render();
  });
  kindSel.addEventListener("change", () => { kind = kindSel.value; load().catch((exc) => app.toast(exc.message, true)); });

  load().catch((exc) => app.toast(`Events: ${exc.message}`, true));

  return {
    onEvents(batch) {
      const fresh = batch.filter((e) => !kind || e.kind === kind).reverse();
      if (!fresh.length) return;
      const known = new Set(rows.map((r) => r.id));
      const added = fresh.filter((e) => !known.has(e.id));
      const tbody = box.querySelector("tbody");
      rows = added.concat(rows).slice(0, MAX_ROWS);
      if (!tbody || tbody.querySelector(".empty")) { render(); return; }
      // Insert only the new rows: a burst of events costs a few DOM nodes, not a re-render.
      tbody.prepend(...added.map((e) => eventRow(e)));
      while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild.remove();
    },
    reload() { load().catch(() => {}); },
    unmount() { alive = false; },
  };
}
