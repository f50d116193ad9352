// actormesh supervisor dashboard: charts. Per actor type, the supervisor's last
// 15 minutes at one point a second (GET /api/series): handled/s, failures/s,
// mailbox depth, ack pending, p50/p99 handler time, and a sparkline per worker.
// Drawn with uPlot (vendor/, MIT), loaded from the package like everything else.
// Uses app.js's helpers (h, api, ui, fmt).
"use strict";

(function charts() {
  const POLL_MS = 2000;
  const SPARK_SECONDS = 300;
  const COLORS = { handled: "#2f6fed", failures: "#b42318", depth: "#9a5b00", ack: "#7a4cc2", p50: "#1a7f4b", p99: "#b42318" };
  // One chart per figure; handler time shows p50 and p99 together (in ms).
  const CHARTS = [
    { id: "handled", title: "Handled / s", series: [["handled", "handled/s", COLORS.handled]] },
    { id: "failures", title: "Failures / s", series: [["failures", "failures/s", COLORS.failures]] },
    { id: "depth", title: "Mailbox depth", series: [["depth", "messages", COLORS.depth]] },
    { id: "ack_pending", title: "Ack pending", series: [["ack_pending", "unacked", COLORS.ack]] },
    { id: "latency", title: "Handler time (ms)", ms: true,
      series: [["p50", "p50", COLORS.p50], ["p99", "p99", COLORS.p99]] },
  ];
  const C = { type: "", seconds: 900, plots: {}, sparks: {}, timer: null, types: "" };

  function panel() {
    let el = document.getElementById("charts-panel");
    if (el) return el;
    el = h("section", { class: "panel wide", id: "charts-panel", "aria-labelledby": "charts-h" },
      h("div", { class: "panel-head" },
        h("h2", { id: "charts-h" }, "Charts"),
        h("div", { class: "tools" },
          h("select", { id: "charts-type", "aria-label": "actor type to chart", onchange: (e) => { C.type = e.target.value; reset(); poll(); } }),
          h("select", { id: "charts-window", "aria-label": "time window", onchange: (e) => { C.seconds = Number(e.target.value); poll(); } },
            h("option", { value: "900" }, "15 min"), h("option", { value: "300" }, "5 min"), h("option", { value: "60" }, "1 min")))),
      h("p", { class: "charts-note muted" }, "One point a second, kept by the supervisor (bounded: 900 points a series); gaps are seconds without a heartbeat."),
      h("div", { class: "charts-grid", id: "charts" }),
      h("div", { class: "sparks", id: "sparks" }));
    const tree = document.getElementById("tree-h");
    const after = tree ? tree.closest("section") : null;
    if (after) after.after(el);
    else document.querySelector("main").prepend(el);
    return el;
  }

  function width(el) {
    return Math.max(260, Math.floor(el.clientWidth || 340));
  }

  function axisValues(ms) {
    return (u, splits) => splits.map((v) => (v == null ? "" : ms ? `${+(v * 1000).toFixed(2)}` : fmt(+v.toFixed(2))));
  }

  function makePlot(spec) {
    const box = h("div", { class: "chart", "data-chart": spec.id }, h("h3", {}, spec.title));
    document.getElementById("charts").append(box);
    const opts = {
      width: width(box), height: 150,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, spec.ms ? 0.001 : 1) * 1.1] } },
      axes: [{ stroke: "#8b97a8", grid: { stroke: "rgba(128,128,128,.15)" } },
        { stroke: "#8b97a8", size: 50, grid: { stroke: "rgba(128,128,128,.15)" }, values: axisValues(spec.ms) }],
      series: [{}, ...spec.series.map(([, label, color]) => ({
        label, stroke: color, width: 1.5, fill: spec.series.length === 1 ? `${color}22` : undefined,
        spanGaps: false, value: (u, v) => (v == null ? "—" : spec.ms ? `${(v * 1000).toFixed(2)} ms` : fmt(+v.toFixed(2))),
      }))],
    };
    const plot = new uPlot(opts, [[], ...spec.series.map(() => [])], box);
    C.plots[spec.id] = { plot, box, spec };
  }

  function reset() {
    for (const p of Object.values(C.plots)) p.plot.destroy();
    C.plots = {};
    for (const s of Object.values(C.sparks)) s.plot.destroy();
    C.sparks = {};
    document.getElementById("charts").replaceChildren();
    document.getElementById("sparks").replaceChildren();
  }

  function spark(id, data) {
    let s = C.sparks[id];
    if (!s) {
      const holder = h("span", { class: "spark-plot" });
      const rate = h("span", { class: "rate", "data-field": "rate" }, "—");
      const row = h("div", { class: "spark", "data-worker": id }, h("code", { title: id }, id), holder, rate);
      document.getElementById("sparks").append(row);
      const plot = new uPlot({
        width: 160, height: 28, cursor: { show: false }, legend: { show: false },
        scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1)] } },
        axes: [{ show: false }, { show: false }],
        series: [{}, { stroke: COLORS.handled, width: 1, fill: `${COLORS.handled}22` }],
      }, [[], []], holder);
      s = C.sparks[id] = { plot, row, rate };
    }
    s.plot.setData(data);
    const values = data[1].filter((v) => v != null);
    s.rate.textContent = values.length ? `${fmt(+values[values.length - 1].toFixed(1))}/s` : "—";
    s.row.dataset.points = String(values.length);
  }

  function typesOf(snap) {
    const types = new Set((snap.mailboxes || []).map((m) => m.actor_type));
    for (const w of snap.workers || []) if (w.actor_type) types.add(w.actor_type);
    return [...types].sort();
  }

  function syncTypes() {
    if (typeof ui === "undefined" || !ui.snapshot) return;
    const types = typesOf(ui.snapshot);
    const sig = types.join(",");
    if (sig === C.types) return;
    C.types = sig;
    const sel = document.getElementById("charts-type");
    sel.replaceChildren(...types.map((t) => h("option", { value: t }, t)));
    if (!types.includes(C.type)) {
      C.type = types[0] || "";
      reset();
    }
    sel.value = C.type;
  }

  async function poll() {
    clearTimeout(C.timer);
    C.timer = setTimeout(poll, POLL_MS);
    if (document.hidden) return;
    panel();
    syncTypes();
    if (!C.type) return;
    let data;
    try {
      data = await api("GET", `/api/series?actor_type=${encodeURIComponent(C.type)}&seconds=${C.seconds}`);
    } catch (e) {
      return; // not logged in on a non-loopback dashboard, or the supervisor is gone
    }
    const series = data.types[C.type];
    if (!series) return;
    if (!Object.keys(C.plots).length) CHARTS.forEach(makePlot);
    for (const { plot, box, spec } of Object.values(C.plots)) {
      plot.setData([data.times, ...spec.series.map(([key]) => series[key])]);
      const points = spec.series.map(([key]) => series[key].filter((v) => v != null).length);
      box.dataset.points = String(Math.max(...points));
      box.dataset.last = String(data.times[data.times.length - 1] || 0);
      const last = series[spec.series[0][0]].filter((v) => v != null).pop();
      box.dataset.value = last == null ? "" : String(last);
    }
    const workers = Object.entries(data.workers).filter(([, w]) => w.actor_type === C.type);
    for (const id of Object.keys(C.sparks)) {
      if (!data.workers[id] || data.workers[id].actor_type !== C.type) {
        C.sparks[id].plot.destroy();
        C.sparks[id].row.remove();
        delete C.sparks[id];
      }
    }
    // A sparkline shows the last few minutes at most: at 160 px, 15 would be a smear.
    const n = Math.min(SPARK_SECONDS, data.times.length);
    const xs = data.times.slice(-n);
    for (const [id, w] of workers) spark(id, [xs, w.handled.slice(-n)]);
  }

  window.addEventListener("resize", () => {
    for (const { plot, box } of Object.values(C.plots)) plot.setSize({ width: width(box), height: 150 });
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", poll);
  else poll();
})();
