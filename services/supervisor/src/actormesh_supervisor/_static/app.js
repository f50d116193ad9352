// actormesh supervisor dashboard: live state over server-sent events, actions over
// POST with the session's CSRF token. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  csrf: "",
  authenticated: false,
  readOpen: false,
  snapshot: null,
  events: [],
  dlq: [],
  dlqSelected: null,
  source: null,
  structure: "",
};

// -- small helpers -----------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function setText(el, text) {
  const t = String(text);
  if (el.textContent !== t) el.textContent = t;
}

function setClass(el, cls) {
  if (el.className !== cls) el.className = cls;
}

const HEALTH = {
  ok: "ok", running: "ok",
  late: "warn", blocked: "warn", draining: "warn", starting: "info", stopping: "warn",
  pending: "idle", stopped: "idle", drained: "idle", unknown: "idle", unsupervised: "idle",
  dead: "bad", failed: "bad", lost: "bad", escalated: "bad",
};
const KIND = {
  failed: "bad", escalated: "bad", dead_lettered: "warn", restarted: "info",
  started: "ok", adopted: "ok", stopped: "idle", split_detected: "bad",
};

function pill(word) {
  return h("span", { class: `pill ${HEALTH[word] || "idle"}` }, word);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 90) return `${seconds.toFixed(1)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function clock(at) {
  const d = new Date(at * 1000);
  return d.toLocaleTimeString([], { hour12: false });
}

function fmt(n) {
  return Number(n || 0).toLocaleString();
}

function toast(text, bad) {
  const el = h("div", { class: bad ? "toast bad" : "toast", role: "status" }, text);
  $("toasts").append(el);
  setTimeout(() => el.remove(), bad ? 6000 : 3500);
}

function banner(text, kind) {
  const el = $("banner");
  el.hidden = !text;
  el.className = kind === "info" ? "banner info" : "banner";
  setText(el, text || "");
}

// -- session and API ---------------------------------------------------------------

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") {
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-CSRF-Token"] = ui.csrf;
    opts.body = JSON.stringify(body || {});
  }
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (!resp.ok) {
    const err = new Error((data && data.error) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

async function refreshSession() {
  const s = await api("GET", "/api/session");
  ui.authenticated = s.authenticated;
  ui.csrf = s.csrf || "";
  ui.readOpen = s.read_open;
  $("login-btn").hidden = ui.authenticated;
  $("logout-btn").hidden = !ui.authenticated;
  document.body.classList.toggle("authed", ui.authenticated);
  for (const b of document.querySelectorAll("[data-needs-login]")) {
    b.title = ui.authenticated ? "" : "log in to use this";
  }
}

async function action(label, method, path, body) {
  if (!ui.authenticated) {
    toast(`Log in to ${label}.`, true);
    openLogin();
    return null;
  }
  try {
    const r = await api(method, path, body);
    toast(`${label}: done`);
    return r;
  } catch (e) {
    if (e.status === 401) {
      ui.authenticated = false;
      await refreshSession();
      openLogin();
    }
    toast(`${label}: ${e.message}`, true);
    return null;
  }
}

function openLogin() {
  $("login-error").hidden = true;
  $("token").value = "";
  if (!$("login").open) $("login").showModal();
  $("token").focus();
}

async function login(ev) {
  ev.preventDefault();
  try {
    const r = await api("POST", "/api/login", { token: $("token").value });
    ui.csrf = r.csrf;
    $("login").close();
    await refreshSession();
    toast("Logged in");
    start();
  } catch (e) {
    $("login-error").hidden = false;
    setText($("login-error"), e.status === 429 ? e.message : "That token is not right.");
  }
}

async function logout() {
  try { await api("POST", "/api/logout"); } catch (_) { /* the session is gone anyway */ }
  await refreshSession();
  toast("Logged out");
  if (!ui.readOpen) stop();
}

// -- live state --------------------------------------------------------------------

function start() {
  if (ui.source) return;
  loadEvents();
  loadDlq();
  const src = new EventSource("/api/stream");
  ui.source = src;
  src.addEventListener("open", () => {
    setClass($("live"), "live on");
    setText($("live"), "live");
  });
  src.addEventListener("error", () => {
    setClass($("live"), "live off");
    setText($("live"), "reconnecting…");
  });
  src.addEventListener("state", (m) => render(JSON.parse(m.data)));
  src.addEventListener("event", (m) => addEvent(JSON.parse(m.data), true));
}

function stop() {
  if (ui.source) ui.source.close();
  ui.source = null;
  setClass($("live"), "live off");
  setText($("live"), "offline");
}

function render(snap) {
  ui.snapshot = snap;
  const s = snap.supervisor;
  setText($("sup-name"), `· ${s.name}`);
  setText(
    $("sup-meta"),
    `prefix ${s.prefix} · backend ${s.backend} · heartbeat ${s.heartbeat_interval}s × ${s.heartbeat_misses}` +
      ` · restarts ${s.restarts_in_window}/${s.intensity} in ${s.period}s · host ${s.host}`,
  );
  if (s.status === "failed") banner(`Supervisor failed: ${s.failed_reason} — restarting stopped. Restart a group to resume.`);
  else if (!s.connected) banner("The supervisor has lost its NATS connection; data may be stale.");
  else {
    const failed = snap.groups.filter((g) => g.status === "failed");
    const splits = snap.splits || [];
    if (failed.length) banner(`Group ${failed.map((g) => g.name).join(", ")} failed: restarting stopped (escalated).`);
    else banner(splits.map((x) => x.message).join(" · "));
  }
  renderSummary(snap);
  renderWorkers(snap);
  renderHosts(snap);
  renderMailboxes(snap);
  renderTools(snap);
  renderDlqTypes(snap);
}

function renderSummary(snap) {
  const c = snap.counts;
  const sum = (...keys) => keys.reduce((n, k) => n + (c[k] || 0), 0);
  const stats = [
    ["workers", snap.workers.length, ""],
    ["healthy", sum("ok"), "ok"],
    ["warning", sum("late", "blocked", "draining", "starting", "stopping"), "warn"],
    ["down", sum("dead", "failed", "lost", "escalated"), "bad"],
    ["groups failed", snap.groups.filter((g) => g.status === "failed").length, "bad"],
  ];
  const box = $("summary");
  if (box.children.length !== stats.length) {
    box.replaceChildren(...stats.map(([label]) => h("div", { class: "stat" }, h("b"), h("span", {}, label))));
  }
  stats.forEach(([, value, cls], i) => {
    const el = box.children[i];
    setClass(el, `stat ${value > 0 ? cls : ""}`);
    setText(el.querySelector("b"), value);
  });
}

// The workers table keeps its rows (and their buttons) between updates: only
// text and classes change, so a click never lands on a row being replaced.
function renderWorkers(snap) {
  const body = $("workers-body");
  const supervised = snap.workers.filter((w) => w.supervised);
  const others = snap.workers.filter((w) => !w.supervised);
  const byId = Object.fromEntries(snap.workers.map((w) => [w.id, w]));
  const structure = JSON.stringify([
    snap.groups.map((g) => [g.name, g.children.map((c) => [c.name, c.workers])]),
    others.map((w) => w.id),
    snap.supervisor.can_restart,
  ]);
  if (structure !== ui.structure) {
    ui.structure = structure;
    const rows = [];
    for (const g of snap.groups) {
      rows.push(groupRow(g, snap.supervisor.can_restart));
      for (const c of g.children) {
        rows.push(childRow(c));
        for (const id of c.workers) rows.push(workerRow(id, snap.supervisor.can_restart, true));
      }
    }
    if (others.length) {
      rows.push(h("tr", { class: "group-row" }, h("td", { colspan: 12 },
        h("div", { class: "group-title" }, h("b", {}, "Not supervised here"),
          h("span", { class: "muted" }, "workers heartbeating on this mesh that belong to no child of this supervisor")))));
      for (const w of others) rows.push(workerRow(w.id, false, false));
    }
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 12, class: "empty" }, "No groups in mesh.toml and no heartbeats yet.")));
    body.replaceChildren(...rows);
  }
  for (const g of snap.groups) updateGroupRow(g);
  for (const tr of body.querySelectorAll("tr.worker-row")) {
    const w = byId[tr.dataset.worker];
    if (w) updateWorkerRow(tr, w, snap.supervisor);
  }
  void supervised;
}

function groupRow(g, canRestart) {
  return h("tr", { class: "group-row", dataset: { group: g.name } },
    h("td", { colspan: 12 },
      h("div", { class: "group-title" },
        h("b", {}, g.name),
        h("span", { class: "tag strong" }, g.strategy.replaceAll("_", " ")),
        h("span", { class: "tag", "data-field": "intensity" }),
        h("span", { "data-field": "status" }),
        h("span", { class: "detail bad", "data-field": "reason" }),
        h("span", { class: "group-actions" },
          canRestart ? h("button", {
            class: "btn small", "data-needs-login": true, "data-action": "restart-group",
            onclick: () => action(`restart group ${g.name}`, "POST", `/api/groups/${encodeURIComponent(g.name)}/restart`),
          }, "Restart group") : null))));
}

function updateGroupRow(g) {
  const tr = document.querySelector(`tr.group-row[data-group="${CSS.escape(g.name)}"]`);
  if (!tr) return;
  setClass(tr, g.status === "failed" ? "group-row failed" : "group-row");
  setText(tr.querySelector('[data-field="intensity"]'), `restarts ${g.restarts_in_window}/${g.intensity} in ${g.period}s`);
  const st = tr.querySelector('[data-field="status"]');
  const word = g.status === "ok" ? "ok" : g.status === "failed" ? "failed" : "starting";
  if (st.dataset.word !== g.status) {
    st.dataset.word = g.status;
    st.replaceChildren(h("span", { class: `pill ${HEALTH[word]}` }, g.status));
  }
  setText(tr.querySelector('[data-field="reason"]'), g.failed_reason || "");
}

function childRow(c) {
  return h("tr", { class: "child-row" },
    h("td", { colspan: 12 },
      h("b", {}, c.name), "  ",
      h("code", {}, c.run), "  ·  ",
      `${c.restart} · ${c.replicas} replica${c.replicas === 1 ? "" : "s"} · shutdown grace ${c.shutdown_grace}s`));
}

function workerRow(id, canRestart, supervised) {
  const cells = ["id", "health", "hb", "inflight", "rate", "handled", "keys", "failures", "restarts", "lag", "pid"]
    .map((f) => h("td", { "data-field": f, class: f === "id" || f === "health" ? "" : "num" }));
  cells[0].append(h("span", { class: "wid" }, id), h("span", { class: "detail", "data-field": "sub" }));
  const buttons = [];
  if (supervised) {
    if (canRestart) {
      buttons.push(h("button", {
        class: "btn small", "data-needs-login": true, "data-action": "restart",
        onclick: () => action(`restart ${id}`, "POST", `/api/workers/${encodeURIComponent(id)}/restart`),
      }, "Restart"));
    }
    buttons.push(h("button", {
      class: "btn small ghost", "data-needs-login": true, "data-action": "drain",
      onclick: () => action(`drain ${id}`, "POST", `/api/workers/${encodeURIComponent(id)}/drain`),
    }, "Drain"));
  }
  // Shown while the worker has parked keys: sends them back to their mailbox.
  const release = h("button", {
    class: "btn small ghost", "data-needs-login": true, "data-action": "release", hidden: true,
    title: "Release the keys parked for failing past their restart intensity",
    onclick: () => {
      const type = release.dataset.actorType;
      action(`release parked ${type} keys`, "POST", `/api/parked/${encodeURIComponent(type)}/release`, { all: true });
    },
  }, "Release parked");
  buttons.push(release);
  return h("tr", { class: supervised ? "worker-row" : "worker-row unsupervised", dataset: { worker: id } },
    cells, h("td", { class: "actions" }, buttons));
}

function updateWorkerRow(tr, w, sup) {
  const f = (name) => tr.querySelector(`[data-field="${name}"]`);
  const split = w.split_with && w.split_with.length ? `split with ${w.split_with.join(", ")}` : "";
  const sub = [w.actor_type, w.adopted ? "adopted" : "", split, w.last_failure ? `last failure: ${w.last_failure}` : ""]
    .filter(Boolean).join(" · ");
  setText(f("sub"), sub);
  setClass(f("sub"), split ? "detail bad" : "detail");
  const health = f("health");
  if (health.dataset.word !== w.health) {
    health.dataset.word = w.health;
    health.replaceChildren(pill(w.health));
  }
  const hb = f("hb");
  if (w.hb_age === null || w.hb_age === undefined) {
    delete hb.dataset.age;
    setText(hb, ago(null));
  } else {
    // The age keeps counting between snapshots (see tickAges).
    Object.assign(hb.dataset, {
      age: w.hb_age, at: performance.now(),
      late: sup.heartbeat_interval * 1.5, dead: sup.heartbeat_interval * sup.heartbeat_misses,
    });
    showAge(hb);
  }
  setText(f("inflight"), fmt(w.in_flight));
  setText(f("rate"), w.throughput.toFixed(1));
  setText(f("handled"), fmt(w.handled));
  // Live instances / passivated so far / keys parked now.
  setText(f("keys"), `${fmt(w.instances || 0)} / ${fmt(w.passivated || 0)} / ${fmt(w.parked || 0)}`);
  setClass(f("keys"), `num ${w.parked ? "warn-text" : ""}`);
  const release = tr.querySelector('[data-action="release"]');
  release.dataset.actorType = w.actor_type;
  release.hidden = !w.parked;
  setText(f("failures"), `${fmt(w.failures)}${w.failed ? ` (${fmt(w.failed)} msgs)` : ""}`);
  setText(f("restarts"), fmt(w.restarts));
  setText(f("lag"), `${Math.round(w.loop_lag * 1000)} ms`);
  setClass(f("lag"), `num ${w.loop_lag > sup.loop_lag_warning ? "warn-text" : ""}`);
  setText(f("pid"), w.pid || "—");
}

// A heartbeat's age as of now: the snapshot's, plus the time since it came.
function showAge(cell) {
  const d = cell.dataset;
  const age = Number(d.age) + (performance.now() - Number(d.at)) / 1000;
  setText(cell, ago(age));
  setClass(cell, `num ${age > Number(d.dead) ? "bad-text" : age > Number(d.late) ? "warn-text" : ""}`);
}

function tickAges() {
  for (const cell of document.querySelectorAll('[data-field="hb"][data-age]')) showAge(cell);
}
setInterval(tickAges, 250);

// -- the tree across hosts (a root supervisor) -----------------------------------------
// Each host supervisor's tree, from its heartbeats: groups and their workers. No
// buttons in it, so it is simply rebuilt at every update.

function renderHosts(snap) {
  const tree = snap.tree;
  const panel = $("hosts-panel");
  panel.hidden = !tree || tree.role !== "root";
  if (panel.hidden) return;
  setText($("hosts-meta"),
    `· root ${tree.host} · ${tree.strategy.replaceAll("_", " ")} · restarts ${tree.restarts_in_window}/${tree.intensity} in ${tree.period}s` +
      (tree.escalated ? " · escalated" : ""));
  const rows = [];
  for (const host of tree.hosts) {
    rows.push(h("tr", { class: `host-row ${host.state === "running" ? "" : "failed"}`, dataset: { host: host.host } },
      h("td", {}, h("b", {}, host.host), h("span", { class: "detail" }, ` ${host.supervisor} · ${host.backend}`),
        host.dashboard ? h("a", { class: "detail", href: host.dashboard, target: "_blank", rel: "noopener" }, " dashboard") : null),
      h("td", { "data-field": "state" }, pill(host.state)),
      h("td", { class: "num" }, ago(host.hb_age)),
      h("td", { class: "num" }, `${host.restarts_in_window}/${host.intensity}`),
      h("td", { class: "num" }, `${host.escalations} / ${host.orders}`),
      h("td", { class: "num" }, host.pid),
      h("td", { class: "detail" }, host.failed_reason || host.note || "")));
    for (const g of host.groups) {
      rows.push(h("tr", { class: "tree-group", dataset: { host: host.host, group: g.name } },
        h("td", {}, "\u2003", h("b", {}, g.name), h("span", { class: "tag strong" }, g.strategy.replaceAll("_", " "))),
        h("td", {}, pill(g.status === "ok" ? "ok" : g.status === "failed" ? "failed" : "starting")),
        h("td", {}),
        h("td", { class: "num" }, `${g.restarts_in_window}/${g.intensity}`),
        h("td", {}), h("td", {}),
        h("td", { class: "detail bad" }, g.failed_reason || "")));
      for (const w of g.workers) {
        rows.push(h("tr", { class: "tree-worker", dataset: { host: host.host, worker: w.id } },
          h("td", {}, "\u2003\u2003", h("span", { class: "wid" }, w.id), h("span", { class: "detail" }, ` ${w.actor_type || w.child}`)),
          h("td", { "data-field": "health" }, pill(w.health)),
          h("td", {}),
          h("td", { class: "num" }, w.restarts),
          h("td", { class: "num" }, w.failures),
          h("td", { class: "num" }, w.pid || "—"),
          h("td", { class: "detail" }, w.last_failure || "")));
      }
    }
  }
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No host supervisor has sent a heartbeat yet.")));
  $("hosts-body").replaceChildren(...rows);
}

function renderMailboxes(snap) {
  const body = $("mailboxes-body");
  if (!snap.mailboxes.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No mailboxes seen yet.")));
    return;
  }
  body.replaceChildren(...snap.mailboxes.map((m) => h("tr", {},
    h("td", {}, h("b", {}, m.actor_type), h("span", { class: "detail" }, m.stream)),
    h("td", { class: "num" }, fmt(m.depth)),
    h("td", { class: "num" }, fmt(m.pending)),
    h("td", { class: "num" }, fmt(m.ack_pending)),
    h("td", { class: `num ${m.redelivered ? "warn-text" : ""}` }, fmt(m.redelivered)),
    h("td", { class: `num ${m.dead_letters ? "bad-text" : ""}` }, fmt(m.dead_letters)),
    h("td", {}, m.error ? h("span", { class: "pill idle", title: m.error }, "none")
      : m.stalled ? h("span", { class: "pill bad" }, `stalled ${m.stalled_for}s`)
      : m.paused ? h("span", { class: "pill warn", title: "paused: messages wait (see Lifecycle)" }, "paused")
      : h("span", { class: "pill ok" }, `${m.consumers} consumer${m.consumers === 1 ? "" : "s"}`)))));
}

// -- tools -------------------------------------------------------------------------
// Per tool, summed over the live workers' heartbeats (workers with metrics on).

function ms(v) {
  if (v === null || v === undefined) return "–";
  return v < 10 ? `${v.toFixed(2)} ms` : `${Math.round(v).toLocaleString()} ms`;
}

function renderTools(snap) {
  const body = $("tools-body");
  const tools = snap.tools || [];
  if (!tools.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "empty" },
      "No tool figures yet (workers report them with metrics on).")));
    return;
  }
  body.replaceChildren(...tools.map((t) => h("tr", { "data-tool": t.tool },
    h("td", {}, h("b", {}, t.tool),
      h("span", { class: "detail" }, `${t.workers} worker${t.workers === 1 ? "" : "s"}`)),
    h("td", { class: "num", "data-field": "calls" }, fmt(t.calls)),
    h("td", { class: "num", "data-field": "p50" }, ms(t.p50_ms)),
    h("td", { class: "num", "data-field": "p99" }, ms(t.p99_ms)),
    h("td", { class: `num ${t.errors ? "bad-text" : ""}`, "data-field": "errors",
      title: `${fmt(t.errors)} of ${fmt(t.calls)}` }, `${(100 * t.error_rate).toFixed(1)}%`),
    h("td", { class: `num ${t.denied ? "warn-text" : ""}`, "data-field": "denied" }, fmt(t.denied)),
    h("td", { class: `num ${t.approvals_pending ? "warn-text" : ""}`, "data-field": "pending" },
      fmt(t.approvals_pending)))));
}

// -- timeline ----------------------------------------------------------------------

async function loadEvents() {
  try {
    const list = await api("GET", "/api/events?limit=300");
    ui.events = list.reverse();
    renderTimeline();
  } catch (e) {
    if (e.status === 401) banner("Log in to see the mesh: this dashboard is not bound to loopback.", "info");
  }
}

function addEvent(ev, fresh) {
  if (ui.events.length && ui.events[0].id >= ev.id) return;
  ui.events.unshift(ev);
  if (ui.events.length > 500) ui.events.length = 500;
  const filter = $("tl-filter").value;
  if (!filter || filter === ev.kind) {
    const list = $("timeline");
    if (list.firstElementChild && list.firstElementChild.classList.contains("empty")) list.replaceChildren();
    list.prepend(eventItem(ev, fresh));
    while (list.children.length > 300) list.lastElementChild.remove();
  }
  if (ev.kind === "dead_lettered") scheduleDlq();
}

function eventItem(ev, fresh) {
  // A root's events about a host supervisor name it in `detail.host`.
  const host = ev.detail && ev.detail.host ? `host ${ev.detail.host}` : "";
  const who = ev.worker || (host && ev.group ? `${host} · ${ev.group}` : host) || ev.group || ev.source;
  const scope = ev.detail && ev.detail.scope ? ` (${ev.detail.scope})` : "";
  const cause = ev.detail && ev.detail.cause ? `${ev.detail.cause}` : "";
  const why = [cause && cause !== ev.reason ? cause : "", ev.reason].filter(Boolean).join(": ");
  const by = ev.source.startsWith("supervisor:") ? "" : " (worker)";
  return h("li", { class: fresh ? "fresh" : "" },
    h("time", { datetime: new Date(ev.at * 1000).toISOString() }, clock(ev.at)),
    h("span", {}, h("span", { class: `pill ${KIND[ev.kind] || "idle"}` }, ev.kind.replace("_", " ") + scope)),
    h("span", { class: "what" }, h("span", { class: "who" }, who), by,
      ev.group && ev.worker ? h("span", { class: "muted" }, ` · ${ev.group}`) : null,
      why ? h("span", { class: "why" }, why) : null,
      typeof traceLink === "function" && ev.detail ? traceLink(traceIdOf(ev.detail.traceparent)) : null));
}

function renderTimeline() {
  const filter = $("tl-filter").value;
  const items = ui.events.filter((e) => !filter || e.kind === filter).slice(0, 300);
  $("timeline").replaceChildren(...(items.length ? items.map((e) => eventItem(e, false))
    : [h("li", { class: "empty" }, "No events yet.")]));
}

// -- dead letters ------------------------------------------------------------------

let dlqTimer = null;
function scheduleDlq() {
  clearTimeout(dlqTimer);
  dlqTimer = setTimeout(loadDlq, 500);
}

function renderDlqTypes(snap) {
  const sel = $("dlq-type");
  const types = snap.mailboxes.map((m) => m.actor_type);
  const have = [...sel.options].map((o) => o.value).filter(Boolean);
  if (JSON.stringify(have) === JSON.stringify(types)) return;
  const current = sel.value;
  sel.replaceChildren(h("option", { value: "" }, "all types"), ...types.map((t) => h("option", { value: t }, t)));
  sel.value = types.includes(current) ? current : "";
}

async function loadDlq() {
  const type = $("dlq-type").value;
  try {
    ui.dlq = await api("GET", `/api/dlq?limit=200${type ? `&actor_type=${encodeURIComponent(type)}` : ""}`);
  } catch (e) {
    return;
  }
  const body = $("dlq-body");
  if (!ui.dlq.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No dead letters. ✓")));
  } else {
    const now = Date.now() / 1000;
    body.replaceChildren(...ui.dlq.map((d) => h("tr", {
      dataset: { seq: d.seq }, class: ui.dlqSelected === d.seq ? "selected" : "",
      onclick: () => showDlq(d.seq),
    },
    h("td", { class: "num" }, d.seq),
    h("td", {}, d.actor_type),
    h("td", {}, h("b", {}, d.error_type || d.error_code), h("span", { class: "detail" }, d.error_message)),
    h("td", { class: "num" }, d.deliveries),
    h("td", {}, h("code", {}, d.worker)),
    h("td", {}, d.dead_at ? `${ago(now - d.dead_at)} ago` : "—"))));
  }
  if (ui.dlqSelected && !ui.dlq.some((d) => d.seq === ui.dlqSelected)) {
    ui.dlqSelected = null;
    $("dlq-detail").replaceChildren(h("p", { class: "muted" }, "Select a dead letter to inspect its payload and reason."));
  }
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
}

async function showDlq(seq) {
  ui.dlqSelected = seq;
  for (const tr of $("dlq-body").querySelectorAll("tr")) tr.classList.toggle("selected", Number(tr.dataset.seq) === seq);
  let d;
  try { d = await api("GET", `/api/dlq/${seq}`); } catch (e) { toast(e.message, true); return; }
  const headers = Object.entries(d.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
  $("dlq-detail").replaceChildren(
    h("h3", {}, `Dead letter #${d.seq} · ${d.actor_type}`),
    h("dl", {},
      h("dt", {}, "Reason"), h("dd", {}, `${d.error_type} [${d.error_code}]: ${d.error_message}`),
      h("dt", {}, "Deliveries"), h("dd", {}, d.deliveries),
      h("dt", {}, "Mailbox subject"), h("dd", {}, h("code", {}, d.original_subject)),
      h("dt", {}, "Worker"), h("dd", {}, h("code", {}, d.worker)),
      h("dt", {}, "Dead since"), h("dd", {}, d.dead_at ? new Date(d.dead_at * 1000).toLocaleString() : "—")),
    h("div", { class: "muted" }, "Payload"),
    h("pre", { "data-field": "payload" }, pretty(d.payload)),
    h("div", { class: "muted" }, "Headers"),
    h("pre", {}, headers || "—"),
    typeof traceRow === "function" ? traceRow(d.headers) : null,
    h("div", { class: "tools" },
      h("button", {
        class: "btn primary", "data-needs-login": true,
        onclick: async () => { if (await action(`replay #${seq}`, "POST", `/api/dlq/${seq}/replay`)) loadDlq(); },
      }, "Replay to mailbox")));
}

async function purgeShown() {
  const type = $("dlq-type").value;
  const what = type ? `all dead letters of ${type}` : "ALL dead letters of this mesh";
  if (!window.confirm(`Purge ${what}? This cannot be undone.`)) return;
  if (await action(`purge ${type || "all"}`, "POST", "/api/dlq/purge", type ? { actor_type: type } : { all: true })) loadDlq();
}

// -- start -------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  $("login-btn").addEventListener("click", openLogin);
  $("logout-btn").addEventListener("click", logout);
  $("login-form").addEventListener("submit", login);
  $("login-cancel").addEventListener("click", () => $("login").close());
  $("tl-filter").addEventListener("change", renderTimeline);
  $("dlq-type").addEventListener("change", loadDlq);
  $("dlq-refresh").addEventListener("click", loadDlq);
  $("dlq-purge").addEventListener("click", purgeShown);
  try {
    await refreshSession();
  } catch (e) {
    banner(`Cannot reach the supervisor: ${e.message}`);
    return;
  }
  if (ui.readOpen || ui.authenticated) start();
  else banner("Log in to see the mesh: this dashboard is not bound to loopback.", "info");
});

// -- approvals ---------------------------------------------------------------------
// Tool calls waiting for an operator. Self-contained: polled once a second while
// the page is live; the decision buttons are control actions (login, CSRF).

const APPROVAL_PILL = { pending: "warn", approved: "ok", rejected: "bad", expired: "idle" };
const approvals = { list: [], shown: "" };

async function loadApprovals() {
  if (!ui.source) return; // not live (not logged in where reading needs it)
  const state = $("approvals-state").value;
  let list;
  try {
    list = await api("GET", `/api/approvals?state=${encodeURIComponent(state)}`);
  } catch (e) {
    return;
  }
  approvals.list = list;
  renderApprovals();
}

function renderApprovals() {
  const list = approvals.list;
  const pending = list.filter((a) => a.state === "pending").length;
  setText($("approvals-count"), pending ? `${pending} pending` : "");
  $("approvals-count").hidden = !pending;
  // Rows are rebuilt only when the set or a state changes: a click never lands on
  // a row being replaced; the time columns are updated in place.
  const shown = JSON.stringify(list.map((a) => [a.id, a.state]));
  const body = $("approvals-body");
  if (shown !== approvals.shown) {
    approvals.shown = shown;
    body.replaceChildren(...(list.length ? list.map(approvalRow)
      : [h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No calls waiting for approval."))]));
  }
  const now = Date.now() / 1000;
  for (const a of list) {
    const tr = body.querySelector(`tr[data-approval="${CSS.escape(a.id)}"]`);
    if (!tr) continue;
    // How long it waited (so far, or until decided); the time left only while pending.
    setText(tr.querySelector('[data-field="waiting"]'), ago((a.decided_at || now) - a.created));
    setText(tr.querySelector('[data-field="left"]'), a.left === null || a.state !== "pending" ? "—" : ago(a.left));
  }
}

function approvalRow(a) {
  const decide = (decision) => async () => {
    const verb = decision === "approve" ? "approve" : "reject";
    if (await action(`${verb} ${a.tool}`, "POST", `/api/approvals/${encodeURIComponent(a.id)}/${decision}`)) {
      loadApprovals();
    }
  };
  const decided = a.state === "pending" ? null
    : h("span", { class: "detail" }, a.decided_by ? `by ${a.decided_by}` : "", a.reason ? ` · ${a.reason}` : "");
  return h("tr", { dataset: { approval: a.id, tool: a.tool, state: a.state } },
    h("td", {}, h("b", {}, a.tool), h("span", { class: "detail" }, `${a.actor_type} · ${a.id}`)),
    h("td", {}, h("code", {}, a.principal || "(none)")),
    h("td", {}, h("code", { "data-field": "arguments" }, a.arguments)),
    h("td", { "data-field": "waiting" }),
    h("td", { class: "num", "data-field": "left" }),
    h("td", {}, h("span", { class: `pill ${APPROVAL_PILL[a.state] || "idle"}`, "data-field": "state" }, a.state), decided),
    h("td", { class: "actions" }, a.state !== "pending" ? null : [
      h("button", { class: "btn small primary", "data-needs-login": true, "data-action": "approve", onclick: decide("approve") }, "Approve"),
      h("button", { class: "btn small danger", "data-needs-login": true, "data-action": "reject", onclick: decide("reject") }, "Reject"),
    ]));
}

document.addEventListener("DOMContentLoaded", () => {
  $("approvals-state").addEventListener("change", () => { approvals.shown = ""; loadApprovals(); });
  setInterval(loadApprovals, 1000);
});
