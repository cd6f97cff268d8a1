// Service detail: rollout state and history, configuration, every replica (task,
// version, state, health, node, endpoints), and Scale / Update / Remove for its
// owner or an admin.

import { ApiError, api, get } from "../api.js";
import { badge, fmtTime, h, shellSplit, table, taskLink, throttle } from "../dom.js";
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
  const historyBox = h("div", { id: "rollout-history" });
  const updateCard = h("div", { class: "card section", id: "service-update", hidden: true });
  const scaleInput = h("input", { id: "scale-replicas", type: "number", min: "0", max: "1000", step: "1", "aria-label": "Replicas" });

  root.append(
    h("a", { class: "crumb", href: "#/services" }, "← Services"), title, error,
    h("div", { class: "grid-2col" },
      h("div", {},
        h("section", { class: "section" },
          h("div", { class: "section-head" }, h("h2", {}, "Replicas"), h("span", { class: "muted", id: "replica-count" })),
          replicasBox),
        h("section", { class: "section" },
          h("div", { class: "section-head" }, h("h2", {}, "Rollout history"), h("span", { class: "muted" }, "created, scaled, rolled out, reverted, removed")),
          historyBox)),
      h("div", {}, actions, updateCard, rollout, info)),
  );

  // -- update (owner or admin): a new spec rolls out under the update policy -------
  const upImage = h("input", { id: "update-image", required: true, maxlength: "255", spellcheck: "false", "aria-label": "Image" });
  const upCommand = h("input", { id: "update-command", spellcheck: "false", placeholder: "image default", "aria-label": "Command" });
  const upEnv = h("textarea", { id: "update-env", rows: "3", spellcheck: "false", placeholder: "KEY=value, one per line", "aria-label": "Environment" });
  const upForm = h("form", { id: "update-form", autocomplete: "off" },
    h("label", {}, "Image", upImage),
    h("label", {}, "Command", upCommand, h("small", { class: "muted" }, "Split like a shell; empty: the image's default.")),
    h("label", {}, "Environment", upEnv),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn primary", id: "update-go" }, "Roll out")));
  updateCard.append(h("h3", {}, "Update"), h("p", { class: "muted" }, "Changing the image, command or environment rolls out a new version (the Rollout panel follows it)."), upForm);
  let formFor = 0; // the version the form was filled from
  function fillUpdate(s) {
    if (formFor === s.version && upForm.contains(document.activeElement)) return;
    formFor = s.version;
    const spec = s.spec || {};
    upImage.value = spec.image || s.image;
    upCommand.value = (spec.command || []).map((w) => (/[\s'"\\]/.test(w) ? `'${w.replace(/'/g, "'\\''")}'` : w)).join(" ");
    upEnv.value = Object.entries(spec.env || {}).map(([k, v]) => `${k}=${v}`).join("\n");
  }
  upForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!svc) return;
    error.clear();
    const body = { ...(svc.spec || {}), name };
    try {
      body.image = upImage.value.trim();
      body.command = upCommand.value.trim() ? shellSplit(upCommand.value.trim()) : [];
      const env = {};
      for (const line of upEnv.value.split("\n")) {
        if (!line.trim()) continue;
        const i = line.indexOf("=");
        if (i <= 0) throw new Error(`env: expected KEY=value, got ${JSON.stringify(line)}`);
        env[line.slice(0, i).trim()] = line.slice(i + 1);
      }
      body.env = env;
    } catch (exc) { error.show(exc); return; }
    const go = document.getElementById("update-go");
    go.disabled = true;
    try {
      const { data } = await api("PUT", `/api/v1/services/${encodeURIComponent(name)}`, { body });
      app.toast(data.change === "rolling" ? `Rolling out ${name} version ${data.version}` : `${name}: ${data.change || "saved"}`);
      formFor = 0;
      render(data);
      loadHistory();
    } catch (exc) {
      error.show(exc);
    } finally {
      go.disabled = false;
    }
  });

  // Events carry no service id: a service's are those whose message names it.
  const mentions = (e) => e.message.startsWith(`service ${name}:`) || e.message.startsWith(`service ${name} `);
  async function loadHistory() {
    try {
      const rows = await get("/api/v1/events", { order: "desc", limit: 1000, kind: "task" });
      if (!alive) return;
      const mine = rows.filter((e) => /^(rollout|service)_/.test(e.reason) && mentions(e)).slice(0, 50);
      historyBox.replaceChildren(table(["Time", "Change", "Message"], mine.map((e) =>
        h("tr", { dataset: { reason: e.reason } },
          h("td", { class: "mono" }, fmtTime(e.at)),
          h("td", {}, h("span", { class: "badge kind" }, e.reason)),
          h("td", { class: "wrap" }, e.message))), { empty: "No changes recorded among the newest 1,000 events." }));
    } catch (exc) {
      if (alive) error.show(exc);
    }
  }

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
    updateCard.hidden = !manage;
    if (manage) fillUpdate(s);
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
  loadHistory();
  const refreshHistory = throttle(loadHistory, 2000);

  return {
    onEvents(rows) {
      if (rows.some((e) => e.task_name === name || replicaIds.has(e.task_id) || touchesServices(e))) refresh();
      if (rows.some((e) => /^(rollout|service)_/.test(e.reason) && mentions(e))) refreshHistory();
    },
    reload() { refresh(); },
    unmount() { alive = false; refresh.cancel(); refreshHistory.cancel(); clearInterval(tick); },
  };
}
