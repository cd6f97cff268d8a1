// The log viewer of the task page: stdout/stderr toggle, search (filter and
// highlight), ANSI colours (SGR escape codes become classes; every other escape
// sequence is dropped), follow/pause, and download of the whole log as text.
// Lines are text nodes only: nothing here parses a string as HTML.

import { api } from "./api.js";
import { h, throttle } from "./dom.js";

const MAX_LINES = 5000; // lines kept on screen; older ones are dropped (the API keeps them all)
// CSI sequences (ESC [ ... final byte), OSC (ESC ] ... BEL or ESC \), and lone escapes.
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

/** Split a line into [text, style] runs following its SGR codes. */
export function ansiRuns(line) {
  const runs = [];
  let style = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, rgb: null };
  let last = 0;
  ESCAPES.lastIndex = 0;
  for (let m = ESCAPES.exec(line); m !== null; m = ESCAPES.exec(line)) {
    if (m.index > last) runs.push([line.slice(last, m.index), style]);
    last = ESCAPES.lastIndex;
    const seq = m[0];
    if (!seq.startsWith("\x1b[") || !seq.endsWith("m")) continue; // not SGR: dropped
    style = { ...style };
    const codes = seq.slice(2, -1).split(";").map((c) => (c === "" ? 0 : Number(c)));
    for (let i = 0; i < codes.length; i += 1) {
      const c = codes[i];
      if (c === 0) style = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, rgb: null };
      else if (c === 1) style.bold = true;
      else if (c === 2) style.dim = true;
      else if (c === 3) style.italic = true;
      else if (c === 4) style.underline = true;
      else if (c === 22) { style.bold = false; style.dim = false; }
      else if (c === 23) style.italic = false;
      else if (c === 24) style.underline = false;
      else if (c >= 30 && c <= 37) { style.fg = c - 30; style.rgb = null; }
      else if (c >= 90 && c <= 97) { style.fg = c - 90 + 8; style.rgb = null; }
      else if (c === 39) { style.fg = null; style.rgb = null; }
      else if (c >= 40 && c <= 47) style.bg = c - 40;
      else if (c >= 100 && c <= 107) style.bg = c - 100 + 8;
      else if (c === 49) style.bg = null;
      else if (c === 38 && codes[i + 1] === 5) { const n = codes[i + 2]; style.fg = n < 16 ? n : null; style.rgb = n >= 16 ? xterm256(n) : null; i += 2; }
      else if (c === 38 && codes[i + 1] === 2) { style.rgb = [codes[i + 2], codes[i + 3], codes[i + 4]].map((v) => Math.max(0, Math.min(255, v || 0))); style.fg = null; i += 4; }
      else if (c === 48 && (codes[i + 1] === 5 || codes[i + 1] === 2)) i += codes[i + 1] === 5 ? 2 : 4;
    }
  }
  if (last < line.length) runs.push([line.slice(last), style]);
  return runs;
}

function xterm256(n) {
  if (n >= 232) { const v = 8 + (n - 232) * 10; return [v, v, v]; }
  const i = n - 16;
  const steps = [0, 95, 135, 175, 215, 255];
  return [steps[Math.floor(i / 36) % 6], steps[Math.floor(i / 6) % 6], steps[i % 6]];
}

/** The nodes of one line: ANSI runs as spans, search matches in <mark>. */
function lineNodes(text, query) {
  const out = [];
  for (const [chunk, st] of ansiRuns(text)) {
    const classes = [];
    if (st.fg !== null) classes.push(`ansi-fg${st.fg}`);
    if (st.bg !== null) classes.push(`ansi-bg${st.bg}`);
    if (st.bold) classes.push("ansi-bold");
    if (st.dim) classes.push("ansi-dim");
    if (st.italic) classes.push("ansi-italic");
    if (st.underline) classes.push("ansi-underline");
    const parts = highlight(chunk, query);
    if (!classes.length && !st.rgb) { out.push(...parts); continue; }
    const span = h("span", { class: classes.join(" ") || null }, parts);
    if (st.rgb) span.style.color = `rgb(${st.rgb.join(",")})`; // CSSOM: allowed by the CSP
    out.push(span);
  }
  return out;
}

function highlight(text, query) {
  if (!query) return [text];
  const parts = [];
  const lower = text.toLowerCase();
  let at = 0;
  for (let i = lower.indexOf(query); i >= 0; i = lower.indexOf(query, at)) {
    if (i > at) parts.push(text.slice(at, i));
    parts.push(h("mark", {}, text.slice(i, i + query.length)));
    at = i + query.length;
  }
  if (at < text.length) parts.push(text.slice(at));
  return parts;
}

export function plain(text) {
  return text.replace(ESCAPES, "");
}

/**
 * The viewer: ``el`` to place, ``add(line)`` for each line from the API,
 * ``end(state)`` when the task ended, ``setStatus(text)``.
 */
export function logViewer(getTask) {
  let stream = "all";
  let query = "";
  let follow = true;
  let count = 0;
  let matches = 0;
  const logs = h("div", { class: "logs", id: "task-logs", role: "log", "aria-live": "off", tabindex: "0", dataset: { stream: "all" } });
  const status = h("span", { class: "muted", id: "log-status" }, "");
  const found = h("span", { class: "muted", id: "log-matches" }, "");
  const streams = h("div", { class: "seg", role: "group", "aria-label": "Streams" },
    ["all", "stdout", "stderr"].map((s) => h("button", {
      type: "button", class: `btn small${s === stream ? " active" : ""}`, dataset: { stream: s },
      onclick: (ev) => {
        stream = s;
        logs.dataset.stream = s;
        for (const b of streams.querySelectorAll("button")) b.classList.toggle("active", b === ev.currentTarget);
        applyFilter();
      },
    }, s)));
  const search = h("input", { type: "search", class: "search", id: "log-search", placeholder: "Search logs", "aria-label": "Search logs", spellcheck: "false" });
  search.addEventListener("input", throttle(() => { query = search.value.trim().toLowerCase(); applyFilter(); }, 200));
  const followBtn = h("button", { type: "button", class: "btn small active", id: "log-follow", "aria-pressed": "true", onclick: () => setFollow(!follow) }, "Follow");
  const download = h("button", { type: "button", class: "btn small", id: "log-download", onclick: () => downloadAll() }, "Download");
  const toolbar = h("div", { class: "log-toolbar" }, streams, search, found, h("span", { class: "spacer" }), followBtn, download);
  const el = h("section", { class: "section" },
    h("div", { class: "section-head" }, h("h2", {}, "Logs"), status), toolbar, logs);

  function setFollow(on) {
    follow = on;
    followBtn.classList.toggle("active", on);
    followBtn.setAttribute("aria-pressed", on ? "true" : "false");
    if (on) logs.scrollTop = logs.scrollHeight;
  }
  logs.addEventListener("scroll", () => {
    const bottom = logs.scrollHeight - logs.scrollTop - logs.clientHeight < 30;
    if (follow !== bottom) setFollow(bottom);
  });

  function visible(elLine) {
    const okStream = stream === "all" || elLine.dataset.stream === stream;
    return okStream && (!query || elLine.dataset.text.toLowerCase().includes(query));
  }

  function paint(elLine) {
    elLine.replaceChildren(h("span", { class: "ts" }, elLine.dataset.ts), ...lineNodes(elLine.dataset.text, query));
  }

  function applyFilter() {
    matches = 0;
    for (const elLine of logs.querySelectorAll(".line[data-stream]")) {
      const show = visible(elLine);
      elLine.hidden = !show;
      if (show && query) matches += 1;
      if (query || elLine.dataset.painted === "q") { paint(elLine); elLine.dataset.painted = query ? "q" : ""; }
    }
    found.textContent = query ? `${matches} matching line${matches === 1 ? "" : "s"}` : "";
    if (follow) logs.scrollTop = logs.scrollHeight;
  }

  function add(line) {
    const elLine = h("span", { class: `line ${line.stream === "stderr" ? "stderr" : "stdout"}`, dataset: { seq: String(line.seq), stream: line.stream, ts: (line.ts || "").slice(11, 19), text: line.line } });
    paint(elLine);
    if (query) elLine.dataset.painted = "q";
    const show = visible(elLine);
    elLine.hidden = !show;
    if (show && query) { matches += 1; found.textContent = `${matches} matching line${matches === 1 ? "" : "s"}`; }
    logs.appendChild(elLine);
    count += 1;
    if (count > MAX_LINES) {
      logs.querySelector(".line[data-stream]")?.remove();
      count -= 1;
    }
    if (follow) logs.scrollTop = logs.scrollHeight;
  }

  function end(state) {
    logs.appendChild(h("span", { class: "line end" }, `— task ended: ${state} —`));
    if (follow) logs.scrollTop = logs.scrollHeight;
  }

  function finish(ended) {
    status.textContent = count ? `${count} lines${count >= MAX_LINES ? ` (the last ${MAX_LINES}; Download has all)` : ""}` : "no output";
    if (!count && ended && !logs.querySelector(".note")) logs.prepend(h("span", { class: "line note" }, "(no output)"));
  }

  /** Every stored line (paged through the API), in the chosen stream, as a text file. */
  async function downloadAll() {
    const task = getTask();
    if (!task) return;
    download.disabled = true;
    try {
      const out = [];
      let after = 0;
      for (let page = 0; page < 200; page += 1) { // at most a million lines
        const { data } = await api("GET", `/api/v1/tasks/${encodeURIComponent(task.id)}/logs`, { query: { after, limit: 5000 } });
        for (const l of data.lines) {
          if (stream === "all" || l.stream === stream) out.push(`${l.ts} ${l.stream} ${plain(l.line)}`);
        }
        if (!data.lines.length || data.next <= after) break;
        after = data.next;
      }
      const blob = new Blob([out.join("\n") + (out.length ? "\n" : "")], { type: "text/plain" });
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob); // a blob: URL of this origin (safeHref is for data, not for this)
      a.download = `${task.name}-${task.id}${stream === "all" ? "" : `-${stream}`}.log`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } finally {
      download.disabled = false;
    }
  }

  return {
    el, add, end, finish,
    setStatus(text) { status.textContent = text; },
    get count() { return count; },
  };
}
