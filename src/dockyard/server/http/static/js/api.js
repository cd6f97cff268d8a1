// The REST API client: the same /api/v1 the CLI uses, with a bearer token.
// The token lives in sessionStorage (this tab) or, when the user asks to be
// remembered, localStorage. It never goes into a URL.

const KEY = "dockyard.token";

export function getToken() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
}

export function setToken(token, remember) {
  clearToken();
  (remember ? localStorage : sessionStorage).setItem(KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && (body.message || body.detail)) || `HTTP ${status}`;
    super(body && body.field ? `${body.field}: ${message}` : message);
    this.status = status;
    this.code = body && body.error;
    this.field = body && body.field;
  }
}

/** Called with the error when the server says the token is no longer good. */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

function headers(extra = {}) {
  return { Authorization: `Bearer ${getToken()}`, Accept: "application/json", ...extra };
}

function url(path, query) {
  const u = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) for (const item of v) u.searchParams.append(k, item);
    else u.searchParams.set(k, String(v));
  }
  return u.pathname + u.search;
}

/** Call the API; resolves to {data, total} (total from X-Total-Count, when sent). */
export async function api(method, path, { query, body, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url(path, query), init);
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { message: text.slice(0, 300) }; }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (res.status === 401) onUnauthorized(err);
    throw err;
  }
  const total = res.headers.get("X-Total-Count");
  return { data, total: total === null ? null : Number(total) };
}

export const get = (path, query, signal) => api("GET", path, { query, signal }).then((r) => r.data);

/** POST a file as the raw request body (build contexts); resolves to the JSON answer. */
export async function upload(path, query, blob) {
  const res = await fetch(url(path, query), {
    method: "POST",
    headers: headers({ "Content-Type": "application/octet-stream" }),
    body: blob,
  });
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (res.status === 401) onUnauthorized(err);
    throw err;
  }
  return data;
}

/** Read a streamed response line by line (NDJSON, SSE) and call onLine for each. */
async function readLines(res, onLine) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      onLine(line);
    }
  }
  if (buf) onLine(buf);
}

/**
 * Follow a task's logs (NDJSON stream). Calls onLine(line) per log line and
 * onEnd(state) at the end. Returns when the stream ends; abort with ``signal``.
 */
export async function followLogs(taskId, after, { onLine, onEnd, signal }) {
  const res = await fetch(url(`/api/v1/tasks/${encodeURIComponent(taskId)}/logs`, { follow: true, after }), {
    headers: headers({ Accept: "application/x-ndjson" }),
    signal,
  });
  if (!res.ok) {
    let body = null;
    try { body = await res.json(); } catch { /* not JSON */ }
    throw new ApiError(res.status, body);
  }
  await readLines(res, (line) => {
    if (!line.trim()) return;
    const obj = JSON.parse(line);
    if (obj.end) onEnd(obj.state); else onLine(obj);
  });
}

/**
 * The live event stream (server-sent events over fetch, so the token travels
 * in the Authorization header rather than the URL). Reconnects with back-off
 * and resumes after the last event id it saw; a ``reset`` from the server (too
 * far behind) is passed on so the app reloads its data.
 */
export class EventStream {
  constructor({ onEvents, onReset, onStatus }) {
    this.onEvents = onEvents;
    this.onReset = onReset;
    this.onStatus = onStatus;
    this.lastId = null;
    this.controller = null;
    this.stopped = false;
    this.delay = 1000;
  }

  start() {
    this.stopped = false;
    this.loop();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    while (!this.stopped) {
      this.controller = new AbortController();
      try {
        this.onStatus("connecting");
        const query = this.lastId === null ? {} : { after: this.lastId };
        const res = await fetch(url("/api/v1/events/stream", query), {
          headers: headers({ Accept: "text/event-stream" }),
          signal: this.controller.signal,
          cache: "no-store",
        });
        if (res.status === 401) { onUnauthorized(new ApiError(401, null)); return; }
        if (!res.ok) throw new Error(`stream: HTTP ${res.status}`);
        await this.consume(res);
      } catch (err) {
        if (this.stopped) return;
      }
      if (this.stopped) return;
      this.onStatus("reconnecting");
      await new Promise((r) => setTimeout(r, this.delay));
      this.delay = Math.min(this.delay * 2, 15000);
    }
  }

  async consume(res) {
    let event = "message";
    let data = [];
    let pending = [];
    let flushTimer = null;
    // Hand events over in small batches: a burst of 500 events is one update.
    const flush = () => {
      flushTimer = null;
      if (pending.length) { const batch = pending; pending = []; this.onEvents(batch); }
    };
    await readLines(res, (line) => {
      if (line === "") {
        if (data.length) this.dispatch(event, data.join("\n"), pending);
        if (pending.length && flushTimer === null) flushTimer = setTimeout(flush, 50);
        event = "message";
        data = [];
        return;
      }
      if (line.startsWith(":")) return;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    });
    if (flushTimer !== null) clearTimeout(flushTimer);
    flush();
  }

  dispatch(event, raw, pending) {
    const payload = JSON.parse(raw);
    if (event === "hello") {
      this.delay = 1000;
      if (this.lastId === null || payload.last_id > this.lastId) this.lastId = payload.last_id;
      this.onStatus("live");
    } else if (event === "event") {
      if (this.lastId === null || payload.id > this.lastId) this.lastId = payload.id;
      pending.push(payload);
    } else if (event === "reset") {
      this.lastId = null;
      this.onReset();
    }
  }
}
