// actormesh supervisor dashboard: lifecycle control. Per actor type: pause and
// resume (JetStream consumer pause: messages wait in the mailbox), stop one actor
// instance (passivate it; the next message activates it with its state); per
// worker: its lifecycle (running, paused, draining, ...) and its instances.
// Uses app.js's helpers (h, pill, setText, action, api, ui); actions go through
// `action`, so they need the session and send its CSRF token like every other.
"use strict";

(function lifecycle() {
  const LC = { types: "", shown: null, workerOpen: null };
  const WORD = { running: "ok", paused: "warn", draining: "warn", starting: "info",
    stopped: "idle", escalated: "bad", active: "ok", passivated: "idle" };

  function lcPill(word) {
    return h("span", { class: `pill ${WORD[word] || "idle"}`, "data-lifecycle": word }, word);
  }

  function panel() {
    let el = document.getElementById("lifecycle-panel");
    if (el) return el;
    el = h("section", { class: "panel wide", id: "lifecycle-panel", "aria-labelledby": "lc-h" },
      h("div", { class: "panel-head" },
        h("h2", { id: "lc-h" }, "Lifecycle"),
        h("span", { class: "muted" }, "pause a type: its messages wait in the mailbox; stop an instance: its state is kept")),
      h("div", { class: "table-wrap" },
        h("table", { id: "lifecycle" },
          h("thead", {}, h("tr", {},
            h("th", {}, "Actor type"),
            h("th", {}, "State"),
            h("th", { class: "num", title: "messages waiting in the mailbox" }, "Waiting"),
            h("th", {}, "Workers"),
            h("th", {}, "Control"),
            h("th", {}, "Stop one instance"))),
          h("tbody", { id: "lifecycle-body" }))),
      h("div", { id: "lifecycle-instances", class: "lc-instances", hidden: true }));
    const mailboxes = document.getElementById("mb-h");
    const after = mailboxes ? mailboxes.closest("section") : null;
    if (after) after.after(el);
    else document.querySelector("main").append(el);
    return el;
  }

  function typeRow(type) {
    const enc = encodeURIComponent(type);
    const keyInput = h("input", { type: "text", placeholder: "key", "aria-label": `key of ${type} to stop`,
      "data-field": "key", size: 12 });
    const pause = h("button", {
      class: "btn small", "data-needs-login": true, "data-action": "pause",
      onclick: () => action(`pause ${type}`, "POST", `/api/types/${enc}/pause`),
    }, "Pause");
    const resume = h("button", {
      class: "btn small", "data-needs-login": true, "data-action": "resume", hidden: true,
      onclick: () => action(`resume ${type}`, "POST", `/api/types/${enc}/resume`),
    }, "Resume");
    const stop = h("button", {
      class: "btn small ghost", "data-needs-login": true, "data-action": "stop-instance",
      onclick: async () => {
        const key = keyInput.value.trim();
        if (!key) { toast("Give the key of the instance to stop.", true); return; }
        const r = await action(`stop ${type}/${key}`, "POST",
          `/api/types/${enc}/instances/${encodeURIComponent(key)}/stop`);
        if (r && r.state === "not_active") toast(`${type}/${key} was not active`);
      },
    }, "Stop instance");
    return h("tr", { "data-type": type },
      h("td", {}, h("b", {}, type)),
      h("td", { "data-field": "state" }),
      h("td", { class: "num", "data-field": "waiting" }),
      h("td", { "data-field": "workers" }),
      h("td", {}, pause, resume),
      h("td", {}, keyInput, " ", stop));
  }

  function workerChip(w) {
    return h("button", {
      class: "btn small ghost lc-worker", "data-worker": w.id, title: "show its instances",
      onclick: () => showInstances(w.id),
    }, `${w.id} `, lcPill(w.lifecycle || w.status || "unknown"),
    ` ${w.instances} live · ${w.passivated} passivated`);
  }

  async function showInstances(worker) {
    const box = document.getElementById("lifecycle-instances");
    LC.workerOpen = worker;
    box.hidden = false;
    box.replaceChildren(h("p", { class: "muted" }, `loading the instances of ${worker}…`));
    try {
      const r = await api("GET", `/api/workers/${encodeURIComponent(worker)}/instances`);
      const rows = r.instances.map((i) => h("li", { "data-key": i.key }, h("code", {}, i.key), " ", lcPill(i.state)));
      box.replaceChildren(
        h("h3", {}, `Instances of ${worker} `, h("span", { class: "muted" }, "(most recent last)")),
        rows.length ? h("ul", { class: "lc-list" }, rows) : h("p", { class: "muted" }, "none"));
    } catch (e) {
      box.replaceChildren(h("p", { class: "error" }, `${worker}: ${e.message}`));
    }
  }

  function render(snap) {
    panel();
    const types = snap.mailboxes.map((m) => m.actor_type);
    const body = document.getElementById("lifecycle-body");
    if (types.join("\n") !== LC.types) {
      LC.types = types.join("\n");
      body.replaceChildren(...types.map(typeRow));
      if (!types.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No actor types seen yet.")));
    }
    for (const m of snap.mailboxes) {
      const tr = body.querySelector(`tr[data-type="${CSS.escape(m.actor_type)}"]`);
      if (!tr) continue;
      const word = m.paused ? "paused" : "running";
      const st = tr.querySelector('[data-field="state"]');
      if (st.dataset.word !== word) {
        st.dataset.word = word;
        st.replaceChildren(lcPill(word));
      }
      setText(tr.querySelector('[data-field="waiting"]'), fmt(m.pending));
      tr.querySelector('[data-action="pause"]').hidden = m.paused;
      tr.querySelector('[data-action="resume"]').hidden = !m.paused;
      const workers = snap.workers.filter((w) => w.actor_type === m.actor_type && w.status);
      const sig = workers.map((w) => `${w.id}:${w.lifecycle}:${w.instances}:${w.passivated}`).join(",");
      const cell = tr.querySelector('[data-field="workers"]');
      if (cell.dataset.sig !== sig) {
        cell.dataset.sig = sig;
        cell.replaceChildren(...(workers.length ? workers.map(workerChip) : [h("span", { class: "muted" }, "none")]));
      }
    }
  }

  // app.js keeps the latest snapshot in `ui.snapshot`; follow it.
  setInterval(() => {
    if (typeof ui === "undefined" || !ui.snapshot || ui.snapshot === LC.shown) return;
    LC.shown = ui.snapshot;
    try { render(ui.snapshot); } catch (e) { console.error("lifecycle panel", e); }
  }, 250);
})();
