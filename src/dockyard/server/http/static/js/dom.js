// DOM helpers. Every piece of data becomes a text node (textContent); nothing
// here ever parses a string as HTML, so user-supplied names, labels and log
// lines cannot inject markup or script.

/**
 * Build an element: h("a", {href: "#/x", class: "c", onclick: fn}, "text", child).
 * Attributes are set with setAttribute (never innerHTML); on* keys become
 * event listeners; children that are strings or numbers become text nodes.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "href") {
      el.setAttribute("href", safeHref(String(value)));
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Only in-app links (#/...) and same-origin paths; anything else becomes inert. */
export function safeHref(href) {
  return href.startsWith("#") || href.startsWith("/") ? href : "#";
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function badge(state, extra = "") {
  const s = String(state || "unknown");
  return h("span", { class: `badge ${s.replace(/[^a-z_]/g, "")} ${extra}`.trim(), dataset: { state: s } }, s);
}

export function taskLink(id, label) {
  return h("a", { href: `#/task/${encodeURIComponent(id)}`, class: "task-link" }, label ?? id);
}

/**
 * A horizontal bar: used (solid) over allocated (tinted) of total. ``warm``/``hot``
 * are the used percentages that colour it amber/red (CPU: amber only; a busy CPU
 * is no fault).
 */
export function usageBar({ used = null, allocated = null, total = 0, text = "", warm = 70, hot = 90 }) {
  const pct = (v) => (total > 0 && v !== null ? Math.max(0, Math.min(100, (100 * v) / total)) : 0);
  const bar = h("div", { class: "bar", title: text });
  if (allocated !== null) {
    const a = h("div", { class: "fill alloc" });
    a.style.width = `${pct(allocated)}%`; // CSSOM, allowed by the CSP (no inline style attribute)
    bar.appendChild(a);
  }
  if (used !== null) {
    const u = h("div", { class: "fill used" });
    const p = pct(used);
    u.style.width = `${p}%`;
    if (p >= hot) bar.classList.add("hot");
    else if (p >= warm) bar.classList.add("warm");
    bar.appendChild(u);
  }
  bar.appendChild(h("span", { class: "text" }, text));
  return bar;
}

/** ``wide``: a table with many columns, shown as cards below 1,100 px (others below 900). */
export function table(headers, rows, { empty = "Nothing here.", wide = false } = {}) {
  const thead = h("thead", {}, h("tr", {}, headers.map((x) => {
    const [label, cls] = Array.isArray(x) ? x : [x, ""];
    return h("th", { class: cls || null }, label);
  })));
  const tbody = h("tbody", {});
  const labels = headers.map((x) => (Array.isArray(x) ? x[0] : x));
  if (rows.length === 0) {
    tbody.appendChild(h("tr", {}, h("td", { class: "empty", colspan: headers.length }, empty)));
  } else {
    for (const r of rows) {
      // On narrow screens each row is a card and each cell is prefixed by its header (CSS).
      Array.from(r.children).forEach((td, i) => { if (labels[i] && !td.dataset.label) td.dataset.label = labels[i]; });
      tbody.appendChild(r);
    }
  }
  return h("div", { class: "table-wrap" }, h("table", { class: wide ? "cards wide" : "cards" }, thead, tbody));
}

// -- formatting ---------------------------------------------------------------
export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, "")} ${units[i]}`;
}

export function fmtCpu(c) {
  if (c === null || c === undefined) return "–";
  return Number(c) % 1 === 0 ? String(c) : Number(c).toFixed(2).replace(/0$/, "");
}

export function fmtDuration(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "–";
  s = Math.max(0, Number(s));
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.floor(s % 60)}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ${m % 60}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

export function fmtTime(epoch) {
  if (!epoch) return "–";
  const d = new Date(epoch * 1000);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour12: false });
  return d.toDateString() === today.toDateString() ? time : `${d.toISOString().slice(0, 10)} ${time}`;
}

export function fmtAgo(epoch) {
  if (!epoch) return "–";
  return `${fmtDuration(Date.now() / 1000 - epoch)} ago`;
}

export function fmtInt(n) {
  return Number(n || 0).toLocaleString("en-US");
}

// -- timing -------------------------------------------------------------------
/**
 * Coalesce bursts: run ``fn`` at most once per ``ms``, always once more after
 * the last call, and never while a previous run (a promise) is still going.
 */
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    timer = null;
    if (running) { again = true; return; }
    running = true;
    last = Date.now();
    try { await fn(); } finally {
      running = false;
      if (again) { again = false; schedule(); }
    }
  };
  const schedule = () => {
    if (timer !== null) return;
    timer = setTimeout(run, Math.max(0, ms - (Date.now() - last)));
  };
  schedule.cancel = () => { if (timer !== null) clearTimeout(timer); timer = null; again = false; };
  return schedule;
}

/** Split a command line like a POSIX shell does for words and quotes (no expansion). */
export function shellSplit(line) {
  const out = [];
  let cur = "";
  let inWord = false;
  let quote = null;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (quote === "'") {
      if (c === "'") quote = null; else cur += c;
    } else if (quote === '"') {
      if (c === '"') quote = null;
      else if (c === "\\" && i + 1 < line.length && '"\\$`'.includes(line[i + 1])) { cur += line[i + 1]; i += 1; }
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c; inWord = true;
    } else if (c === "\\" && i + 1 < line.length) {
      cur += line[i + 1]; i += 1; inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) { out.push(cur); cur = ""; inWord = false; }
    } else {
      cur += c; inWord = true;
    }
  }
  if (quote) throw new Error("unclosed quote in command");
  if (inWord) out.push(cur);
  return out;
}
