// CPU and memory over time, drawn with the vendored uPlot (window.uPlot, loaded
// by index.html from /ui/vendor/uplot/). One panel = two charts (CPU, memory)
// fed by a usage series of the API: /api/v1/tasks/ID/usage, /api/v1/nodes/ID/usage
// or /api/v1/usage ({resolution_s, cpu_limit, memory_limit_bytes, points}).

import { get } from "./api.js";
import { fmtBytes, fmtCpu, h } from "./dom.js";

/** Cores with as many decimals as the axis step needs (0.0025 -> 3), else 2. */
function cpuText(v, incr) {
  const decimals = incr > 0 ? Math.min(4, Math.max(0, -Math.floor(Math.log10(incr)))) : 2;
  return v === 0 ? "0" : Number(v).toFixed(decimals);
}

const WINDOWS = [["1 h", 3600], ["6 h", 21600], ["24 h", 86400]];
const HEIGHT = 170;

// A few points show as dots (a line needs two).
const fewPoints = (u, si, i0, i1) => i1 - i0 < 4;

function chart(box, { label, color, fmt, limitLabel, empty, xRange }) {
  const U = window.uPlot;
  if (!U) return null;
  const opts = {
    width: Math.max(200, box.clientWidth || 300),
    height: HEIGHT,
    legend: { show: true, live: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true, range: () => xRange() }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : empty] } },
    axes: [
      { stroke: "#5d6b7b", grid: { stroke: "#e1e6ec" }, ticks: { stroke: "#e1e6ec" } },
      { stroke: "#5d6b7b", grid: { stroke: "#e1e6ec" }, ticks: { stroke: "#e1e6ec" }, size: 76, values: (u, vals, ax, space, incr) => vals.map((v) => fmt(v, incr)) },
    ],
    series: [
      { value: (u, v) => (v === null ? "–" : new Date(v * 1000).toLocaleTimeString([], { hour12: false })) },
      { label, stroke: color, fill: `${color}22`, width: 1.5, points: { show: fewPoints, size: 5, fill: color }, value: (u, v) => (v === null ? "–" : fmt(v)) },
      { label: limitLabel, stroke: "#9aa5b1", dash: [4, 4], width: 1, points: { show: false }, value: (u, v) => (v === null ? "–" : fmt(v)) },
    ],
  };
  return new U(opts, [[], [], []], box);
}

/**
 * A card with a window picker and two charts. ``source`` is the API path of the
 * usage series; ``title`` heads the card. Returns {el, refresh(), destroy()}.
 */
export function usagePanel(source, { title = "Usage", id = "usage", note = "" } = {}) {
  let windowS = 3600;
  let alive = true;
  const status = h("span", { class: "muted chart-status" }, "");
  const picker = h("div", { class: "seg", role: "group", "aria-label": "Time window" },
    WINDOWS.map(([text, s]) => h("button", {
      type: "button", class: `btn small${s === windowS ? " active" : ""}`, dataset: { window: String(s) },
      onclick: (ev) => {
        windowS = s;
        for (const b of picker.querySelectorAll("button")) b.classList.toggle("active", b === ev.currentTarget);
        refresh();
      },
    }, text)));
  const cpuBox = h("div", { class: "chart", dataset: { chart: "cpu" } });
  const memBox = h("div", { class: "chart", dataset: { chart: "memory" } });
  const el = h("section", { class: "card section usage-panel", id },
    h("div", { class: "section-head" }, h("h3", {}, title), status, h("span", { class: "spacer" }), picker),
    note ? h("p", { class: "muted small-note" }, note) : null,
    h("div", { class: "charts" },
      h("div", { class: "chart-cell" }, h("div", { class: "chart-title" }, "CPU (cores)"), cpuBox),
      h("div", { class: "chart-cell" }, h("div", { class: "chart-title" }, "Memory"), memBox)));

  let cpu = null;
  let mem = null;
  let span = [Date.now() / 1000 - windowS, Date.now() / 1000];
  const xRange = () => span;
  const ensure = () => {
    if (!cpu && cpuBox.isConnected) cpu = chart(cpuBox, { label: "CPU", color: "#1f6feb", fmt: cpuText, limitLabel: "limit", empty: 1, xRange });
    if (!mem && memBox.isConnected) mem = chart(memBox, { label: "memory", color: "#0e7c86", fmt: fmtBytes, limitLabel: "limit", empty: 64 * 1024 * 1024, xRange });
  };
  const resize = () => {
    for (const [u, box] of [[cpu, cpuBox], [mem, memBox]]) {
      if (u && box.clientWidth) u.setSize({ width: box.clientWidth, height: HEIGHT });
    }
  };
  let frame = 0;
  const observer = new ResizeObserver(() => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(resize);
  });
  observer.observe(el);

  async function refresh() {
    if (!alive) return;
    let data;
    try {
      data = await get(source, { window_s: windowS });
    } catch (exc) {
      if (alive) status.textContent = `unavailable: ${exc.message}`;
      return;
    }
    if (!alive) return;
    ensure();
    const pts = data.points || [];
    span = [data.since, Date.now() / 1000]; // the whole window, however few the points
    const xs = pts.map((p) => p.t);
    const cpuLimit = data.cpu_limit;
    const memLimit = data.memory_limit_bytes;
    el.dataset.points = String(pts.length);
    status.textContent = pts.length
      ? `${pts.length} points, ${data.resolution_s} s each`
      : "no samples yet (the first appear about 10 s after a task starts)";
    if (!window.uPlot) status.textContent = "charts unavailable (uPlot did not load)";
    if (cpu) cpu.setData([xs, pts.map((p) => p.cpu), pts.map(() => cpuLimit ?? null)]);
    if (mem) mem.setData([xs, pts.map((p) => p.memory_bytes), pts.map(() => memLimit ?? null)]);
  }

  return {
    el,
    refresh,
    destroy() {
      alive = false;
      observer.disconnect();
      cancelAnimationFrame(frame);
      if (cpu) cpu.destroy();
      if (mem) mem.destroy();
    },
  };
}
