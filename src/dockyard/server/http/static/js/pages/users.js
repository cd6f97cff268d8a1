// Users: tasks, usage and fair-share standing per user (admins see everyone,
// users themselves); for admins, adding users, setting a user's share and quota,
// and making tokens (shown once).

import { api, get } from "../api.js";
import { fmtInt, h, table, throttle } from "../dom.js";
import { errorBox } from "./services.js";

function quotaText(quota) {
  const parts = Object.entries(quota || {}).map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join(", ") : "none";
}

/** "max_cpu=4, cpu_hours=10" -> {max_cpu: "4", cpu_hours: 10}; numbers where they parse. */
export function parseQuota(text) {
  const out = {};
  for (const part of text.split(/[,\n]/)) {
    if (!part.trim()) continue;
    const i = part.indexOf("=");
    if (i <= 0) throw new Error(`quota: expected key=value, got ${JSON.stringify(part.trim())}`);
    const key = part.slice(0, i).trim();
    const raw = part.slice(i + 1).trim();
    out[key] = raw !== "" && !Number.isNaN(Number(raw)) ? Number(raw) : raw;
  }
  return out;
}

export function mount(root, app) {
  let alive = true;
  const error = errorBox("users-error");
  const box = h("div", { id: "users" });
  const admin = h("div", { id: "users-admin", hidden: !app.me.admin });
  const secret = h("div", { class: "card section token-box", id: "new-token", hidden: true });
  root.append(
    h("div", { class: "section-head" }, h("h1", {}, "Users"),
      h("span", { class: "muted" }, app.me.admin ? "every user's tasks, usage in their quota period and fair-share standing" : "your tasks, usage and fair-share standing")),
    error, secret, box,
    h("p", { class: "muted" }, "Share is the fair-share weight an admin gives a user; usage is their decayed billed usage; "
      + "the factor 2^(−usage/share) (1 = nothing used, towards 0 = used a lot) orders queued work of the same priority."),
    admin,
  );

  function showToken(who, token) {
    secret.hidden = false;
    const field = h("input", { class: "mono", id: "new-token-value", readonly: true, value: token, "aria-label": "New token" });
    secret.replaceChildren(
      h("h3", {}, `Token for ${who}`),
      h("p", { class: "muted" }, "Shown once: copy it now. It is stored hashed."),
      h("div", { class: "inline-form wrap" }, field,
        h("button", { type: "button", class: "btn small", onclick: () => { field.select(); navigator.clipboard?.writeText(token).catch(() => {}); } }, "Copy"),
        h("button", { type: "button", class: "btn small ghost", onclick: () => { secret.hidden = true; secret.replaceChildren(); } }, "Done")));
    field.select();
  }

  // -- admin: add a user ----------------------------------------------------------
  if (app.me.admin) {
    const name = h("input", { name: "name", id: "user-new-name", required: true, maxlength: "63", placeholder: "alice", spellcheck: "false" });
    const home = h("input", { name: "home", id: "user-new-home", maxlength: "1024", placeholder: "/home/alice (default)" });
    const isAdmin = h("input", { type: "checkbox", id: "user-new-admin" });
    const form = h("form", { class: "inline-form wrap", id: "user-add-form" },
      h("label", {}, "Name", name), h("label", {}, "Home", home),
      h("label", { class: "check inline-check" }, isAdmin, "admin"),
      h("button", { type: "submit", class: "btn primary", id: "user-add-go" }, "Add user"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.clear();
      try {
        const { data } = await api("POST", "/api/v1/users", { body: { name: name.value.trim(), admin: isAdmin.checked, home: home.value.trim() } });
        form.reset();
        showToken(data.user.name, data.token);
        app.toast(`Added ${data.user.name}`);
        load(true);
      } catch (exc) {
        error.show(exc);
      }
    });
    admin.append(h("section", { class: "card section" }, h("h3", {}, "Add a user"), form),
      h("p", { class: "muted", id: "token-note" }, "Listing and revoking API tokens are not in the API yet, so not here either; "
        + "new tokens can be made here (Edit, then New token)."));
  }

  function editRow(u, detail) {
    const share = h("input", { type: "number", min: "0", step: "any", value: String(u.share), "aria-label": `Share of ${u.name}`, class: "share-input" });
    const quota = h("input", { value: Object.entries(u.quota || {}).map(([k, v]) => `${k}=${v}`).join(", "), placeholder: "max_cpu=4, max_memory=8g, max_tasks=10, cpu_hours=100", "aria-label": `Quota of ${u.name}`, spellcheck: "false" });
    const form = h("form", { class: "inline-form wrap", dataset: { editUser: u.name } },
      h("label", {}, "Share", share), h("label", { class: "grow" }, "Quota", quota),
      h("button", { type: "submit", class: "btn small primary" }, "Save"),
      h("button", { type: "button", class: "btn small", dataset: { action: "token" }, onclick: async () => {
        error.clear();
        try {
          const { data } = await api("POST", "/api/v1/tokens", { body: { user: u.name, description: `made in the dashboard by ${app.me.name}` } });
          showToken(data.user, data.token);
        } catch (exc) { error.show(exc); }
      } }, "New token"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.clear();
      try {
        const body = { share: Number(share.value), quota: parseQuota(quota.value) };
        await api("PATCH", `/api/v1/users/${encodeURIComponent(u.name)}`, { body });
        app.toast(`Saved ${u.name}`);
        detail.hidden = true;
        refresh();
      } catch (exc) {
        error.show(exc);
      }
    });
    return form;
  }

  async function load(force = false) {
    try {
      const rows = await get("/api/v1/users/stats");
      if (!alive) return;
      // an open edit form is not replaced under the admin's hands (saving closes it)
      if (!force && box.querySelector(".edit-row:not([hidden])")) return;
      const headers = ["User", ["Running", "num"], ["Queued", "num"], ["Finished", "num"], ["CPU hours", "num"], ["Memory GiB·h", "num"],
        "Quota", ["Quota CPU h used", "num"], ["Share", "num"], ["Usage", "num"], ["Factor", "num"]];
      if (app.me.admin) headers.push("");
      const trs = [];
      for (const u of rows) {
        const tr = h("tr", { dataset: { user: u.name } },
          h("td", {}, u.name),
          h("td", { class: "num" }, fmtInt(u.running)),
          h("td", { class: "num" }, fmtInt(u.queued)),
          h("td", { class: "num" }, fmtInt(u.finished)),
          h("td", { class: "num" }, (u.cpu_seconds / 3600).toFixed(3)),
          h("td", { class: "num" }, (u.memory_gib_s / 3600).toFixed(3)),
          h("td", { class: "wrap mono" }, quotaText(u.quota)),
          h("td", { class: "num" }, u.quota_cpu_hours_used.toFixed(3)),
          h("td", { class: "num share" }, String(u.share)),
          h("td", { class: "num fs-usage" }, u.usage.toPrecision(3)),
          h("td", { class: "num factor" }, u.factor.toFixed(3)));
        trs.push(tr);
        if (app.me.admin) {
          const detail = h("tr", { class: "edit-row", hidden: true }, h("td", { colspan: headers.length, dataset: { label: "Edit" } }));
          tr.appendChild(h("td", {}, h("button", { class: "btn small", dataset: { action: "edit" }, onclick: () => {
            detail.hidden = !detail.hidden;
            if (!detail.hidden) detail.firstChild.replaceChildren(editRow(u, detail));
          } }, "Edit")));
          trs.push(detail);
        }
      }
      box.replaceChildren(table(headers, trs, { wide: true, empty: "No users." }));
    } catch (exc) {
      if (alive) error.show(exc);
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
