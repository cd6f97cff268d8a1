// The dashboard shell: sign-in, navigation (hash routes), the live event
// stream that drives every page, the submit-job and confirm dialogs.

import { ApiError, EventStream, api, clearToken, get, getToken, setToken, setUnauthorizedHandler } from "./api.js";
import { h, shellSplit } from "./dom.js";
import * as builds from "./pages/builds.js";
import * as events from "./pages/events.js";
import * as jobs from "./pages/jobs.js";
import * as node from "./pages/node.js";
import * as nodes from "./pages/nodes.js";
import * as overview from "./pages/overview.js";
import * as service from "./pages/service.js";
import * as services from "./pages/services.js";
import * as task from "./pages/task.js";
import * as users from "./pages/users.js";

const $ = (id) => document.getElementById(id);

const ROUTES = [
  { re: /^\/?$/, page: overview, nav: "overview", title: "Overview" },
  { re: /^\/jobs$/, page: jobs, nav: "jobs", title: "Jobs" },
  { re: /^\/task\/([^/]+)$/, page: task, nav: "jobs", title: "Task" },
  { re: /^\/nodes$/, page: nodes, nav: "nodes", title: "Nodes" },
  { re: /^\/nodes\/([^/]+)$/, page: node, nav: "nodes", title: "Node" },
  { re: /^\/builds$/, page: builds, nav: "builds", title: "Builds" },
  { re: /^\/builds\/([^/]+)$/, page: builds, nav: "builds", title: "Build" },
  { re: /^\/services$/, page: services, nav: "services", title: "Services" },
  { re: /^\/services\/([^/]+)$/, page: service, nav: "services", title: "Service" },
  { re: /^\/users$/, page: users, nav: "users", title: "Users" },
  { re: /^\/events$/, page: events, nav: "events", title: "Events" },
];

/** What pages get: who is signed in and the shared UI services. */
const app = {
  me: null,
  stream: null,
  current: null, // {page, instance}
  toast,
  confirm,
  navigate(hash) { window.location.hash = hash; },
};
window.dockyard = app; // for debugging in the console; holds no secrets

// -- toasts and dialogs ---------------------------------------------------------
function toast(message, bad = false) {
  const el = h("div", { class: `toast${bad ? " bad" : ""}`, role: "status" }, message);
  $("toasts").appendChild(el);
  setTimeout(() => el.remove(), bad ? 8000 : 4000);
}

/** A confirm dialog of our own (window.confirm would block the page). */
function confirm(text, action = "Confirm") {
  const dlg = $("confirm-dialog");
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = action;
  dlg.returnValue = "";
  dlg.showModal();
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "yes"), { once: true });
  });
}

// -- sign-in ------------------------------------------------------------------
function showLogin(message) {
  stopApp();
  $("shell").hidden = true;
  $("login").hidden = false;
  const err = $("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("login-token").focus();
}

async function trySignIn(token, remember) {
  setToken(token, remember);
  try {
    app.me = await get("/api/v1/whoami");
  } catch (exc) {
    clearToken();
    const msg = exc instanceof ApiError && exc.status === 401 ? "That token is not valid." : `Cannot reach the server: ${exc.message}`;
    showLogin(msg);
    return false;
  }
  startApp();
  return true;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = $("login-token").value.trim();
  if (!token) return;
  $("login-submit").disabled = true;
  try {
    if (await trySignIn(token, $("login-remember").checked)) $("login-token").value = "";
  } finally {
    $("login-submit").disabled = false;
  }
});

$("logout").addEventListener("click", () => {
  clearToken();
  app.me = null;
  showLogin("");
});

setUnauthorizedHandler(() => {
  if (app.me === null) return;
  clearToken();
  app.me = null;
  showLogin("Your session ended (token revoked or invalid). Sign in again.");
});

// -- the app ------------------------------------------------------------------
function startApp() {
  $("login").hidden = true;
  $("shell").hidden = false;
  const who = $("whoami");
  who.replaceChildren(h("span", { id: "whoami-name" }, app.me.name), h("span", { class: "role" }, app.me.admin ? "admin" : "user"));
  document.body.dataset.role = app.me.admin ? "admin" : "user";
  app.stream = new EventStream({
    onEvents: (rows) => app.current?.instance?.onEvents?.(rows),
    onReset: () => app.current?.instance?.reload?.(),
    onStatus: (state) => {
      const live = $("live");
      live.dataset.state = state;
      live.textContent = state === "live" ? "live" : state;
    },
  });
  app.stream.start();
  route();
}

function stopApp() {
  if (app.stream) app.stream.stop();
  app.stream = null;
  unmountCurrent();
}

function unmountCurrent() {
  if (app.current?.instance?.unmount) app.current.instance.unmount();
  app.current = null;
}

function route() {
  if (!app.me) return;
  const raw = window.location.hash.replace(/^#/, "");
  const [path, qs] = raw.split("?");
  const params = new URLSearchParams(qs || "");
  let match = null;
  let found = ROUTES[0];
  for (const r of ROUTES) {
    match = path.match(r.re);
    if (match) { found = r; break; }
  }
  unmountCurrent();
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === found.nav);
  const main = $("main");
  main.replaceChildren();
  document.title = `${found.title} · dockyard`;
  const args = match ? match.slice(1).map(decodeURIComponent) : [];
  const instance = found.page.mount(main, app, { args, params });
  app.current = { page: found.page, instance };
}

window.addEventListener("hashchange", route);

// -- submit a job -------------------------------------------------------------
const submitDialog = $("submit-dialog");
const submitForm = $("submit-form");

$("submit-open").addEventListener("click", () => {
  $("submit-error").hidden = true;
  submitDialog.showModal();
  submitForm.elements.name.focus();
});
$("submit-cancel").addEventListener("click", () => submitDialog.close());

submitForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = submitForm.elements;
  const errBox = $("submit-error");
  errBox.hidden = true;
  const body = { name: f.name.value.trim(), image: f.image.value.trim() };
  try {
    body.command = f.command.value.trim() ? shellSplit(f.command.value.trim()) : [];
    if (f.cpu.value.trim()) body.cpu = f.cpu.value.trim();
    if (f.memory.value.trim()) body.memory = f.memory.value.trim();
    if (f.max_runtime_s.value) body.max_runtime_s = Number(f.max_runtime_s.value);
    if (f.kill_grace_s.value) body.kill_grace_s = Number(f.kill_grace_s.value);
    if (f.restart.value) body.restart = f.restart.value;
    const env = {};
    for (const line of f.env.value.split("\n")) {
      if (!line.trim()) continue;
      const i = line.indexOf("=");
      if (i <= 0) throw new Error(`env: expected KEY=value, got ${JSON.stringify(line)}`);
      env[line.slice(0, i).trim()] = line.slice(i + 1);
    }
    body.env = env;
  } catch (exc) {
    errBox.textContent = exc.message;
    errBox.hidden = false;
    return;
  }
  $("submit-go").disabled = true;
  try {
    const { data } = await api("POST", "/api/v1/jobs", { body });
    submitDialog.close();
    submitForm.reset();
    toast(`Submitted ${data.name} (${data.id})`);
    app.navigate(`#/task/${encodeURIComponent(data.id)}`);
  } catch (exc) {
    errBox.textContent = exc.message;
    errBox.hidden = false;
  } finally {
    $("submit-go").disabled = false;
  }
});

// -- boot ---------------------------------------------------------------------
if (getToken()) {
  get("/api/v1/whoami").then(
    (me) => { app.me = me; startApp(); },
    (exc) => {
      if (exc instanceof ApiError && exc.status === 401) clearToken();
      showLogin(exc instanceof ApiError && exc.status === 401 ? "" : `Cannot reach the server: ${exc.message}`);
    },
  );
} else {
  showLogin("");
}
