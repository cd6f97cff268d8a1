// Services: the caller's services (admins: all) with readiness and rollout,
// their template instances (URL, time left, Kill) and the templates to launch.
// The API returns whole lists; the page renders at most PAGE rows per table.

import { api, get } from "../api.js";
import { badge, fmtDuration, fmtInt, h, table, throttle } from "../dom.js";

const PAGE = 50;

/** Events that can change what a services page shows (besides its replicas' own). */
export function touchesServices(e) {
  return /^(service_|rollout_|template_)/.test(e.reason || "") || e.kind === "node";
}

/** The router's path for a service (same origin as the dashboard; see docs/routing.md). */
export function svcPath(name) {
  return `/svc/${encodeURIComponent(name)}/`;
}

/** A link that opens the service in a new tab; the text is the full URL the API reports. */
export function svcLink(s) {
  return h("a", { href: svcPath(s.name), class: "svc-url mono", target: "_blank", rel: "noopener noreferrer" }, s.url || svcPath(s.name));
}

export function serviceLink(name) {
  return h("a", { href: `#/services/${encodeURIComponent(name)}`, class: "service-link" }, name);
}

export function readyText(s) {
  return `${s.ready}/${s.replicas}`;
}

export function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return null;
  return h("div", { class: "labels" }, entries.map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`)));
}

export function timeLeft(expiresAt) {
  if (!expiresAt) return "–";
  const left = expiresAt - Date.now() / 1000;
  return left > 0 ? fmtDuration(left) : "expiring…";
}

export function canManage(app, s) {
  return Boolean(app.me.admin || s.owner === app.me.name);
}

/** Client-side paging over a list the API returns whole. */
function pager(id, state, total, rerender) {
  const end = Math.min(total, (state.page + 1) * PAGE);
  return h("div", { class: "pager", id },
    h("span", { class: "range" }, total ? `${fmtInt(state.page * PAGE + 1)}–${fmtInt(end)} of ${fmtInt(total)}` : "0"),
    h("button", { class: "btn small", disabled: state.page === 0, dataset: { page: "prev" }, onclick: () => { state.page -= 1; rerender(); } }, "‹ Prev"),
    h("button", { class: "btn small", disabled: end >= total, dataset: { page: "next" }, onclick: () => { state.page += 1; rerender(); } }, "Next ›"));
}

function pageOf(list, state) {
  const pages = Math.max(1, Math.ceil(list.length / PAGE));
  state.page = Math.min(Math.max(0, state.page), pages - 1);
  return list.slice(state.page * PAGE, (state.page + 1) * PAGE);
}

/** A page-level error box: the API's message (with its field), never swallowed. */
export function errorBox(id) {
  const el = h("p", { class: "error", id, role: "alert", hidden: true });
  el.show = (exc) => { el.textContent = exc.message || String(exc); el.hidden = false; };
  el.clear = () => { el.textContent = ""; el.hidden = true; };
  return el;
}

export function mount(root, app) {
  let alive = true;
  let services = [];
  let templates = [];
  let q = "";
  const svcState = { page: 0 };
  const instState = { page: 0 };
  const tplState = { page: 0 };
  const shown = new Set(); // names of services on screen: their replicas' events refresh

  const search = h("input", { class: "search", type: "search", placeholder: "Filter by name", "aria-label": "Filter services" });
  const error = errorBox("services-error");
  const svcBox = h("div", { id: "services" });
  const instBox = h("div", { id: "instances" });
  const tplBox = h("div", { id: "templates" });
  const launched = h("div", { id: "launched", class: "queue-bar section", hidden: true });
  root.append(
    h("div", { class: "section-head" }, h("h1", {}, "Services"),
      h("span", { class: "muted" }, app.me.admin ? "every user's services" : "your services"),
      h("span", { class: "spacer" }), search),
    error,
    h("section", { class: "section" }, svcBox),
    h("section", { class: "section" },
      h("div", { class: "section-head" }, h("h2", {}, app.me.admin ? "Instances" : "My instances"),
        h("span", { class: "muted" }, app.me.admin ? "template instances of every user" : "template instances you launched; each is removed at its lifetime")),
      launched, instBox),
    h("section", { class: "section" },
      h("div", { class: "section-head" }, h("h2", {}, "Templates"), h("span", { class: "muted" }, "launch an instance of your own")),
      tplBox),
  );

  function killButton(s) {
    return h("button", {
      class: "btn small", dataset: { action: "kill-instance", service: s.name },
      onclick: async () => {
        if (!(await app.confirm(`Kill instance ${s.name}? Its replicas stop and the URL goes away.`, "Kill"))) return;
        error.clear();
        try {
          await api("DELETE", `/api/v1/services/${encodeURIComponent(s.name)}`);
          app.toast(`Removed ${s.name}`);
          if (launched.dataset.service === s.name) launched.hidden = true;
          refresh();
        } catch (exc) { error.show(exc); }
      },
    }, "Kill");
  }

  function rolloutCell(s) {
    const r = s.rollout || {};
    return h("td", { class: "wrap rollout" }, badge(r.status || "stable"),
      r.message ? h("div", { class: "muted rollout-message" }, r.message) : null);
  }

  function renderServices() {
    const list = q ? services.filter((s) => s.name.includes(q)) : services;
    const rows = pageOf(list, svcState).map((s) => h("tr", { dataset: { service: s.name, ready: readyText(s) } },
      h("td", { class: "wrap" }, serviceLink(s.name), s.template ? h("span", { class: "muted" }, ` (${s.template})`) : null, labelChips(s.labels)),
      h("td", {}, s.owner),
      h("td", { class: "num" }, String(s.version)),
      h("td", { class: `num ready${s.ready < s.replicas ? " short" : ""}` }, readyText(s)),
      rolloutCell(s),
      h("td", { class: "wrap mono image" }, s.image),
      h("td", {}, svcLink(s))));
    svcBox.replaceChildren(
      table(["Name", "Owner", ["Version", "num"], ["Ready", "num"], "Rollout", "Image", "URL"], rows,
        { empty: q ? "No service matches." : "No services yet. Create one with dockyard service create or the API." }),
      pager("services-pager", svcState, list.length, renderServices));
  }

  function renderInstances() {
    const mine = services.filter((s) => s.template).sort((a, b) => b.created_at - a.created_at);
    const rows = pageOf(mine, instState).map((s) => h("tr", { dataset: { instance: s.name, ready: readyText(s) } },
      h("td", {}, serviceLink(s.name)),
      h("td", {}, s.template),
      ...(app.me.admin ? [h("td", {}, s.owner)] : []),
      h("td", { class: "num ready" }, s.ready > 0 ? readyText(s) : h("span", { class: "muted" }, `${readyText(s)} starting…`)),
      h("td", {}, svcLink(s)),
      h("td", { class: "num expires", dataset: { expires: String(s.expires_at || "") } }, timeLeft(s.expires_at)),
      h("td", {}, canManage(app, s) ? killButton(s) : null)));
    const headers = ["Instance", "Template", ...(app.me.admin ? ["Owner"] : []), ["Ready", "num"], "URL", ["Expires in", "num"], ""];
    instBox.replaceChildren(table(headers, rows, { empty: "No instances. Launch one from a template below." }),
      pager("instances-pager", instState, mine.length, renderInstances));
  }

  function launchButton(t) {
    return h("button", {
      class: "btn small primary", dataset: { action: "launch", template: t.name },
      onclick: async (ev) => {
        const btn = ev.currentTarget;
        btn.disabled = true;
        error.clear();
        try {
          const { data } = await api("POST", `/api/v1/templates/${encodeURIComponent(t.name)}/launch`);
          app.toast(`Launched ${data.name}`);
          launched.dataset.service = data.name;
          launched.replaceChildren(
            h("span", {}, "Launched ", serviceLink(data.name), " — "),
            svcLink(data),
            h("span", { class: "muted" }, ` (ready once its health check passes; expires in ${fmtDuration(t.lifetime_s)})`));
          launched.hidden = false;
          await load();
        } catch (exc) {
          error.show(exc);
        } finally {
          btn.disabled = false;
        }
      },
    }, "Launch");
  }

  function renderTemplates() {
    const rows = pageOf(templates, tplState).map((t) => h("tr", { dataset: { template: t.name } },
      h("td", {}, t.name),
      h("td", { class: "wrap" }, t.description || "–"),
      h("td", { class: "mono" }, t.image),
      h("td", { class: "num" }, fmtDuration(t.lifetime_s)),
      h("td", { class: "num" }, String(t.max_per_user)),
      h("td", {}, launchButton(t))));
    tplBox.replaceChildren(
      table(["Template", "Description", "Image", ["Lifetime", "num"], ["Per user", "num"], ""], rows,
        { empty: app.me.admin ? "No templates. Register one with dockyard template create." : "No templates." }),
      pager("templates-pager", tplState, templates.length, renderTemplates));
  }

  async function load() {
    if (!alive) return;
    try {
      const [svcs, tpls] = await Promise.all([get("/api/v1/services"), get("/api/v1/templates")]);
      if (!alive) return;
      services = svcs;
      templates = tpls;
      shown.clear();
      for (const s of services) shown.add(s.name);
      renderServices();
      renderInstances();
      renderTemplates();
    } catch (exc) {
      if (alive) error.show(exc);
    }
  }

  const refresh = throttle(load, 1000);
  search.addEventListener("input", () => { q = search.value.trim(); svcState.page = 0; renderServices(); });
  const tick = setInterval(() => {
    for (const cell of instBox.querySelectorAll("td.expires")) {
      const at = Number(cell.dataset.expires);
      if (at) cell.textContent = timeLeft(at);
    }
  }, 1000);
  load();

  return {
    onEvents(rows) { if (rows.some((e) => touchesServices(e) || (e.task_name && shown.has(e.task_name)))) refresh(); },
    reload() { refresh(); },
    unmount() { alive = false; refresh.cancel(); clearInterval(tick); },
  };
}
