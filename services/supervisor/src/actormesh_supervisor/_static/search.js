// actormesh supervisor dashboard: message search. A read-only peek (GET
// /api/search) into a mailbox or the dead letters by key, Nats-Msg-Id or stream
// sequence: headers and a size-limited payload preview, shown as text (never as
// HTML), with a link to the message's trace (traces.js).
// Uses app.js's helpers (h, api, ui, fmt, toast, pretty, clock).
"use strict";

(function search() {
  const S = { results: [], selected: null, types: "" };

  function panel() {
    let el = document.getElementById("search-panel");
    if (el) return el;
    el = h("section", { class: "panel wide", id: "search-panel", "aria-labelledby": "search-h" },
      h("div", { class: "panel-head" },
        h("h2", { id: "search-h" }, "Message search"),
        h("span", { class: "muted" }, "read-only: nothing is consumed or acknowledged")),
      h("form", { class: "search-form", id: "search-form", onsubmit: (e) => { e.preventDefault(); run(); } },
        h("select", { id: "search-where", "aria-label": "where to search" },
          h("option", { value: "mailbox" }, "mailbox"), h("option", { value: "dlq" }, "dead letters")),
        h("select", { id: "search-type", "aria-label": "actor type" }),
        h("select", { id: "search-by", "aria-label": "search by" },
          h("option", { value: "key" }, "by key"), h("option", { value: "id" }, "by Nats-Msg-Id"),
          h("option", { value: "seq" }, "by stream sequence")),
        h("input", { id: "search-q", type: "text", "aria-label": "what to search for", placeholder: "user-42, a message id, or 17", required: true }),
        h("button", { class: "btn primary", id: "search-go", type: "submit" }, "Search")),
      h("p", { class: "search-note muted", id: "search-note" },
        "By key: the key's messages, oldest first. By id: the newest 10,000 messages are read (there is no index). Payloads show their first 4 KiB."),
      h("div", { class: "dlq" },
        h("div", { class: "table-wrap" },
          h("table", { id: "search-results" },
            h("thead", {}, h("tr", {},
              h("th", { class: "num" }, "Seq"), h("th", {}, "Key"), h("th", {}, "Msg id"),
              h("th", { class: "num" }, "Size"), h("th", {}, "Stored"), h("th", {}, "Trace"))),
            h("tbody", { id: "search-body" },
              h("tr", {}, h("td", { colspan: 6, class: "empty" }, "Search a mailbox or the dead letters."))))),
        h("aside", { class: "dlq-detail", id: "search-detail" },
          h("p", { class: "muted" }, "Select a message to see its headers and payload."))));
    const dlq = document.getElementById("dlq-h");
    const after = dlq ? dlq.closest("section") : null;
    if (after) after.after(el);
    else document.querySelector("main").append(el);
    document.getElementById("search-where").addEventListener("change", syncTypes);
    return el;
  }

  function syncTypes() {
    if (typeof ui === "undefined" || !ui.snapshot) return;
    const types = new Set((ui.snapshot.mailboxes || []).map((m) => m.actor_type));
    for (const w of ui.snapshot.workers || []) if (w.actor_type) types.add(w.actor_type);
    const dlq = document.getElementById("search-where").value === "dlq";
    const list = [...types].sort();
    const sig = `${dlq}:${list.join(",")}`;
    if (sig === S.types) return;
    S.types = sig;
    const sel = document.getElementById("search-type");
    const current = sel.value;
    sel.replaceChildren(...(dlq ? [h("option", { value: "" }, "all types")] : []),
      ...list.map((t) => h("option", { value: t }, t)));
    if ([...sel.options].some((o) => o.value === current)) sel.value = current;
  }

  async function run() {
    const params = new URLSearchParams({
      where: document.getElementById("search-where").value,
      actor_type: document.getElementById("search-type").value,
      by: document.getElementById("search-by").value,
      q: document.getElementById("search-q").value.trim(),
      limit: "50",
    });
    const note = document.getElementById("search-note");
    let r;
    try {
      r = await api("GET", `/api/search?${params}`);
    } catch (e) {
      note.textContent = e.message;
      note.dataset.state = "error";
      toast(`Search: ${e.message}`, true);
      return;
    }
    S.results = r.messages;
    S.selected = null;
    note.dataset.state = "done";
    note.textContent = `${r.messages.length} found in ${r.stream} (${fmt(r.scanned)} message gets` +
      `${r.incomplete ? `; stopped at the limit, there may be more` : ""}).`;
    render();
  }

  function render() {
    const body = document.getElementById("search-body");
    if (!S.results.length) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "Nothing found.")));
    } else {
      body.replaceChildren(...S.results.map((m) => h("tr", {
        dataset: { seq: m.seq }, onclick: () => show(m),
      },
      h("td", { class: "num" }, m.seq),
      h("td", {}, h("code", {}, m.key || "—")),
      h("td", {}, h("code", {}, m.msg_id || "—")),
      h("td", { class: "num" }, fmt(m.size)),
      h("td", {}, m.time ? clock(m.time) : "—"),
      h("td", {}, traceLink(m.trace_id) || "—"))));
    }
    document.getElementById("search-detail").replaceChildren(
      h("p", { class: "muted" }, S.results.length ? "Select a message to see its headers and payload." : ""));
  }

  function show(m) {
    S.selected = m.seq;
    for (const tr of document.getElementById("search-body").querySelectorAll("tr")) {
      tr.classList.toggle("selected", Number(tr.dataset.seq) === m.seq);
    }
    const headers = Object.entries(m.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
    const payload = m.encoding === "text" ? pretty(m.preview) : m.preview;
    document.getElementById("search-detail").replaceChildren(
      h("h3", {}, `#${m.seq} · ${m.stream}`),
      h("dl", {},
        h("dt", {}, "Subject"), h("dd", {}, h("code", {}, m.subject)),
        h("dt", {}, "Stored"), h("dd", {}, m.time ? new Date(m.time * 1000).toLocaleString() : "—"),
        h("dt", {}, "Size"), h("dd", {}, `${fmt(m.size)} bytes${m.truncated ? " (preview cut)" : ""}`)),
      traceRow(m.headers),
      h("div", { class: "muted" }, m.encoding === "hex" ? "Payload (binary: hex dump)" : "Payload"),
      h("pre", { "data-field": "payload" }, payload || "—"),
      h("div", { class: "muted" }, "Headers"),
      h("pre", { "data-field": "headers" }, headers || "—"));
  }

  function init() {
    panel();
    syncTypes();
    // The actor types follow the live snapshot app.js keeps.
    setInterval(syncTypes, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
