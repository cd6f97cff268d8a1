// Builds: upload a build context (zip or tar), the builds you may see (admins:
// all), and one build's per-node state and output, followed live while it runs.

import { ApiError, get, upload } from "../api.js";
import { badge, fmtTime, h, table, throttle } from "../dom.js";
import { errorBox } from "./services.js";

const TERMINAL = new Set(["succeeded", "failed"]);
const POLL_MS = 1000;

export function mount(root, app, { args }) {
  const selected = args[0] || null;
  let alive = true;
  let since = 0;
  let pollTimer = null;

  const error = errorBox("build-error");
  const listBox = h("div", { id: "builds" });
  const detail = h("div", { class: "card section", id: "build-detail", hidden: !selected });
  const output = h("pre", { class: "logs build-output", id: "build-output", role: "log", tabindex: "0" });
  const fileInput = h("input", { type: "file", id: "build-file", accept: ".zip,.tar,.tar.gz,.tgz", "aria-label": "Build context" });
  const tagInput = h("input", { id: "build-tag", placeholder: "image tag, e.g. me/app:1", maxlength: "255", spellcheck: "false" });
  const form = h("form", { class: "inline-form wrap", id: "build-form" },
    h("label", {}, "Context (zip or tar)", fileInput),
    h("label", {}, "Tag", tagInput),
    h("button", { type: "submit", class: "btn primary", id: "build-go" }, "Build"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.clear();
    const file = fileInput.files && fileInput.files[0];
    if (!file) { error.show(new Error("context: choose a zip or tar file")); return; }
    const go = document.getElementById("build-go");
    go.disabled = true;
    try {
      const build = await upload("/api/v1/builds", { tag: tagInput.value.trim() || undefined, filename: file.name }, file);
      app.toast(`Build ${build.id} started`);
      app.navigate(`#/builds/${encodeURIComponent(build.id)}`);
    } catch (exc) {
      error.show(exc);
    } finally {
      go.disabled = false;
    }
  });

  root.append(
    h("div", { class: "section-head" }, h("h1", {}, "Builds"),
      h("span", { class: "muted" }, "images built from an uploaded context on every ready node (kept in server memory, the last 500)")),
    error,
    h("section", { class: "card section" }, h("h3", {}, "New build"), form),
    detail,
    h("section", { class: "section" }, h("h2", {}, "Recent builds"), listBox),
  );

  async function loadList() {
    try {
      const rows = await get("/api/v1/builds");
      if (!alive) return;
      listBox.replaceChildren(table(["Build", "Image", "State", "Owner", "Nodes", "Started", "Finished"],
        rows.slice(0, 50).map((b) => h("tr", { dataset: { build: b.id, state: b.state } },
          h("td", {}, h("a", { href: `#/builds/${encodeURIComponent(b.id)}`, class: "mono" }, b.id)),
          h("td", { class: "mono wrap" }, b.image),
          h("td", {}, badge(b.state)),
          h("td", {}, b.owner),
          h("td", {}, b.nodes.map((n) => `${n.name}: ${n.state}`).join(", ") || "–"),
          h("td", {}, fmtTime(b.created_at)),
          h("td", {}, fmtTime(b.finished_at)))),
        { empty: "No builds yet." }));
    } catch (exc) {
      if (!alive) return;
      if (exc instanceof ApiError && exc.status === 409) {
        listBox.replaceChildren(h("p", { class: "muted", id: "builds-off" }, exc.message));
        form.hidden = true;
        return;
      }
      error.show(exc);
    }
  }

  async function pollBuild() {
    pollTimer = null;
    if (!alive || !selected) return;
    let b;
    try {
      b = await get(`/api/v1/builds/${encodeURIComponent(selected)}`, { since });
    } catch (exc) {
      if (!alive) return;
      if (exc instanceof ApiError && exc.status === 404) {
        detail.replaceChildren(h("h3", {}, "Build not found"), h("p", { class: "muted" }, `No build ${selected} that you may see (builds are kept in server memory).`));
        return;
      }
      error.show(exc);
      pollTimer = setTimeout(pollBuild, POLL_MS * 3);
      return;
    }
    if (!alive) return;
    renderDetail(b);
    since = b.offset + b.lines.length;
    const stick = output.scrollHeight - output.scrollTop - output.clientHeight < 30;
    for (const line of b.lines) output.appendChild(h("span", { class: "line" }, line));
    if (stick) output.scrollTop = output.scrollHeight;
    if (!TERMINAL.has(b.state)) pollTimer = setTimeout(pollBuild, POLL_MS);
    else loadList();
  }

  let head = null;
  function renderDetail(b) {
    if (!head) {
      head = h("div", {});
      detail.replaceChildren(head, h("h3", {}, "Output"), output);
    }
    head.replaceChildren(...[
      h("div", { class: "title-row" }, h("h2", { id: "build-id", class: "mono" }, b.id), h("span", { id: "build-state" }, badge(b.state)),
        h("span", { class: "muted mono" }, b.image)),
      b.error ? h("p", { class: "error" }, b.error) : null,
      table(["Node", "State", "Error"], b.nodes.map((n) => h("tr", { dataset: { node: n.name } },
        h("td", {}, n.name), h("td", {}, badge(n.state)), h("td", { class: "wrap" }, n.error || "–"))), { empty: "No nodes took it." }),
    ].filter(Boolean));
  }

  const refreshList = throttle(loadList, 1000);
  loadList();
  if (selected) pollBuild();

  return {
    onEvents(rows) { if (rows.some((e) => String(e.reason || "").startsWith("build_"))) refreshList(); },
    reload() { refreshList(); },
    unmount() { alive = false; refreshList.cancel(); if (pollTimer) clearTimeout(pollTimer); },
  };
}
