// Service detail: rollout state, configuration, every replica (task, version,
// state, health, node, endpoints), and Scale / Remove for its owner or an admin.

import { ApiError, api, get } from "../api.js";
import { badge, fmtTime, h, table, taskLink, throttle } from "../dom.js";
import { canManage, errorBox, labelChips, readyText, svcLink, timeLeft, touchesServices } from "./services.js";

function healthText(hc) {
  if (!hc) return "none (running is ready)";
  const what = hc.kind === "cmd" ? JSON.stringify(hc.command || []) : hc.kind === "http" ? `GET ${hc.path || "/"}` : "connect";
  return `${hc.kind}: ${what}, every ${hc.interval_s} s, timeout ${hc.timeout_s} s, ${hc.retries} retries`;
}

function updateText(u) {
  if (!u) return "–";
  return `${u.order}, ${u.max_parallel} at a time, deadline ${u.deadline_s} s${u.auto_revert ? ", auto-revert" : ""}`;
}

export function mount(root, app, { args }) {
  const name = args[0];
  let alive = true;
  let svc = null;
  let replicaIds = new Set();

  const title = h("div", { class: "title-row" });
  const error = errorBox("service-error");
  const actions = h("div", { class: "card section", id: "service-actions", hidden: true });
  const rollout = h("div", { class: "card section", id: "service-rollout" });
  const info = h("div", { class: "card section", id: "service-info" });
  const replicasBox = h("div", { id: "replicas" });
  const scaleInput = h("input", { id: "scale-replicas", type: "number", min: "0", max: "1000", step: "1", "aria-label": "Replicas" });

  root.append(
    h("a", { class: "crumb", href: "#/services" }, "← Services"), title, error,
    h("div", { class: "grid-2col" },
      h("div", {},
        h("section", { class: "section" },
          h("div", { class: "section-head" }, h("h2", {}, "Replicas"), h("span", { class: "muted", id: "replica-count" })),
          replicasBox)),
      h("div", {}, actions, rollout, info)),
  );

  // -- scale and remove (owner or admin) --------------------------------------
  // novalidate: out-of-range input goes to the API, whose answer is shown as is.
  const scaleForm = h("form", { class: "inline-form", id: "scale-form", novalidate: true },
    h("label", { class: "inline" }, "Replicas", scaleInput),
    h("button", { type: "submit", class: "btn primary", id: "scale-go" }, "Scale"));
  scaleForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.clear();
    const raw = scaleInput.value.trim();
    const replicas = raw === "" ? Number.NaN : Number(raw);
    if (!Number.isInteger(replicas)) { error.show(new Error("replicas: a whole number, 0–1000")); return; }
    const go = document.getElementById("scale-go");
    go.disabled = true;
    try {
      const { data } = await api("POST", `/api/v1/services/${encodeURIComponent(name)}/scale`, { body: { replicas } });
      app.toast(data.change === "unchanged" ? `${name} already has ${replicas} replicas` : `Scaling ${name} to ${replicas}`);
      render(data);
    } catch (exc) {
      error.show(exc);
    } finally {
      go.disabled = false;
    }
  });

  const removeBtn = h("button", {
    type: "button", class: "btn danger", id: "service-remove", dataset: { action: "remove" },
    onclick: async () => {
      if (!(await app.confirm(`Remove service ${name}? Its replicas stop and ${svc ? svc.url : "its URL"} stops answering.`, "Remove"))) return;
      error.clear();
      removeBtn.disabled = true;
      try {
        await api("DELETE", `/api/v1/services/${encodeURIComponent(name)}`);
        app.toast(`Removed ${name}`);
        app.navigate("#/services");
      } catch (exc) {
        error.show(exc);
        removeBtn.disabled = false;
      }
    },
  }, "Remove");
  actions.append(h("h3", {}, "Manage"), h("div", { class: "section-head" }, scaleForm, h("span", { class: "spacer" }), removeBtn));

  function kv(pairs) {
    const dl = h("dl", { class: "kv" });
    for (const [k, v] of pairs) dl.append(h("dt", {}, k), h("dd", { dataset: { field: k } }, v ?? "–"));
    return dl;
  }

  function endpoints(r) {
    if (!r.endpoints.length) return "–";
    return r.endpoints.map((e) => h("div", { class: "mono" }, `${e.address}:${e.host_port} → ${e.container_port}`));
  }

  function render(s) {
    svc = s;
    replicaIds = new Set(s.replicas_detail.map((r) => r.task_id));
    const r = s.rollout || {};
    title.replaceChildren(
      h("h1", { id: "service-name" }, s.name),
      h("span", { id: "service-ready", class: "badge kind", dataset: { ready: readyText(s) } }, `${readyText(s)} ready`),
      h("span", { id: "service-status" }, badge(r.status || "stable")),
      h("span", { class: "spacer" }),
      svcLink(s));
    const manage = canManage(app, s);
    actions.hidden = !manage;
    if (manage && document.activeElement !== scaleInput) scaleInput.value = String(s.replicas);

    rollout.replaceChildren(h("h3", {}, "Rollout"), kv([
      ["Status", badge(r.status || "stable")],
      ["Versions", r.to_version ? `${r.from_version ?? "–"} → ${r.to_version}` : `${s.version}`],
      ["Started", fmtTime(r.started_at)],
      ["Message", r.message ? h("span", { id: "rollout-message" }, r.message) : "–"],
    ]));

    info.replaceChildren(h("h3", {}, "Service"), kv([
      ["Owner", s.owner],
      ["Version", String(s.version)],
      ["Replicas", `${s.replicas} wanted, ${s.running} running, ${s.ready} ready`],
      ["Image", h("span", { class: "mono", id: "service-image" }, s.image)],
      ["Ports", s.ports.length ? s.ports.join(", ") : "–"],
      ["Health check", healthText(s.health)],
      ["Update", updateText(s.update)],
      ["Labels", labelChips(s.labels) ? h("div", { id: "service-labels" }, labelChips(s.labels)) : "–"],
      ["URL", svcLink(s)],
      ...(s.template ? [["Template", s.template], ["Expires in", h("span", { class: "expires", dataset: { expires: String(s.expires_at || "") } }, timeLeft(s.expires_at))]] : []),
      ["Created", fmtTime(s.created_at)],
    ]));

    document.getElementById("replica-count").textContent = `${s.replicas_detail.length} active`;
    replicasBox.replaceChildren(table(["Task", ["Version", "num"], "State", "Health", "Node", "Endpoints"],
      s.replicas_detail.map((rep) => h("tr", { dataset: { taskId: rep.task_id, state: rep.state, ready: rep.ready ? "yes" : "no" } },
        h("td", {}, taskLink(rep.task_id)),
        h("td", { class: "num" }, String(rep.version)),
        h("td", {}, badge(rep.state)),
        h("td", {}, rep.health ? badge(rep.health) : h("span", { class: "muted" }, "no check"), rep.ready ? h("span", { class: "muted" }, " ready") : null),
        h("td", {}, rep.node || "–"),
        h("td", {}, endpoints(rep)))),
      { empty: s.replicas ? "No replicas yet: the controller is creating them." : "Scaled to 0." }));
  }

  async function load() {
    try {
      const s = await get(`/api/v1/services/${encodeURIComponent(name)}`);
      if (!alive) return;
      render(s);
    } catch (exc) {
      if (!alive) return;
      if (exc instanceof ApiError && exc.status === 404) {
        svc = null;
        actions.hidden = true;
        title.replaceChildren(h("h1", {}, "Service not found"));
        info.replaceChildren(h("p", { class: "muted" }, `No live service ${name} that you may see.`));
        rollout.replaceChildren();
        replicasBox.replaceChildren();
        return;
      }
      error.show(exc);
    }
  }

  const refresh = throttle(load, 700);
  const tick = setInterval(() => {
    for (const cell of info.querySelectorAll(".expires")) {
      const at = Number(cell.dataset.expires);
      if (at) cell.textContent = timeLeft(at);
    }
  }, 1000);
  load();

  return {
    onEvents(rows) {
      if (rows.some((e) => e.task_name === name || replicaIds.has(e.task_id) || touchesServices(e))) refresh();
    },
    reload() { refresh(); },
    unmount() { alive = false; refresh.cancel(); clearInterval(tick); },
  };
}
