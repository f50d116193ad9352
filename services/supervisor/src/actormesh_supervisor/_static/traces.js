// actormesh supervisor dashboard: trace links. mesh.toml's `[supervisor] trace_url`
// (for example Jaeger's "http://127.0.0.1:16686/trace/{trace_id}") turns the trace
// id of a W3C `traceparent` into a link; without it the id is shown as text.
// Used by app.js (dead letters, events) and search.js (found messages).
"use strict";

const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** The trace id of a `traceparent` value, or "" (all zeros is no trace). */
function traceIdOf(traceparent) {
  const m = TRACEPARENT.exec(String(traceparent || "").trim().toLowerCase());
  return m && !/^0+$/.test(m[1]) ? m[1] : "";
}

/** The configured trace UI's URL for a trace id, or "" when none is configured. */
function traceUrl(traceId) {
  const tpl = (typeof ui !== "undefined" && ui.snapshot && ui.snapshot.supervisor.trace_url) || "";
  if (!tpl || !/^[0-9a-f]{32}$/.test(traceId)) return "";
  return tpl.split("{trace_id}").join(encodeURIComponent(traceId));
}

/** A link to the trace (or the id as code when no trace UI is configured); null without an id. */
function traceLink(traceId) {
  if (!traceId) return null;
  const url = traceUrl(traceId);
  if (!url) return h("code", { class: "trace-id", "data-trace-id": traceId, title: "set [supervisor] trace_url in mesh.toml to link traces" }, traceId);
  return h("a", { class: "trace-link", href: url, target: "_blank", rel: "noopener noreferrer",
    "data-trace-id": traceId, title: "open the trace" }, `trace ${traceId.slice(0, 8)}…`);
}

/** A "Trace" line for a message's headers, or null when they carry no trace. */
function traceRow(headers) {
  const id = traceIdOf((headers || {}).traceparent);
  return id ? h("div", { class: "trace-row" }, h("span", { class: "muted" }, "Trace "), traceLink(id)) : null;
}
