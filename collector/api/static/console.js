// campus-sense security console: vanilla JS, no dependencies.
"use strict";
(() => {
  const API = "/api/v1";
  const $ = (s) => document.querySelector(s);
  const state = { token: sessionStorage.getItem("cs_token"), me: null, alerts: new Map(), es: null,
                  selected: null, muted: localStorage.getItem("cs_muted") === "1", audio: null,
                  retry: null };

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }
  const fmt = (ms) => (ms ? new Date(ms).toLocaleString() : "");
  const ago = (ms) => {
    if (!ms) return "";
    const s = Math.max(0, (Date.now() - ms) / 1000);
    return s < 60 ? `${s | 0}s` : s < 3600 ? `${(s / 60) | 0}m` : s < 86400 ? `${(s / 3600) | 0}h` : `${(s / 86400) | 0}d`;
  };

  // ---------------------------------------------------------------- errors / API
  function showError(msg) {
    const e = $("#error");
    if (!msg) { e.hidden = true; e.textContent = ""; return; }
    e.textContent = msg; e.hidden = false;
  }
  async function api(path, opts = {}) {
    // the audit log records changes made here as via=console
    const headers = { Authorization: `Bearer ${state.token}`, "X-Campus-Sense-Client": "console" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(API + path, { method: opts.method || "GET", headers,
                                        body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined });
    let data = null;
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    if (r.status === 401) {
      logout(`Not logged in (401): ${(data && data.detail) || "token missing, invalid or revoked"}. Log in again.`);
      throw new Error("401");
    }
    if (r.status === 403) {
      showError(`Not allowed (403) for role ${state.me ? state.me.role : "?"}: ${(data && data.detail) || ""}`);
      throw new Error("403");
    }
    if (!r.ok) {
      showError(`Request failed (${r.status}): ${(data && JSON.stringify(data.detail)) || r.statusText}`);
      throw new Error(String(r.status));
    }
    return data;
  }

  // ---------------------------------------------------------------- sound
  function audioCtx() {
    if (!state.audio) {
      const AC = window.AudioContext || window.webkitAudioContext;
      if (AC) state.audio = new AC();
    }
    return state.audio;
  }
  function beep() {
    if (state.muted) return;
    const ctx = audioCtx();
    if (!ctx) return;
    if (ctx.state === "suspended") ctx.resume();
    const t = ctx.currentTime;
    for (let i = 0; i < 3; i++) {
      const o = ctx.createOscillator(), g = ctx.createGain();
      o.type = "square"; o.frequency.value = 880;
      g.gain.setValueAtTime(0.0001, t + i * 0.25);
      g.gain.exponentialRampToValueAtTime(0.2, t + i * 0.25 + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.25 + 0.18);
      o.connect(g).connect(ctx.destination);
      o.start(t + i * 0.25); o.stop(t + i * 0.25 + 0.2);
    }
    document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);
  }
  function renderMute() {
    $("#mute").textContent = state.muted ? "sound: muted" : "sound: on";
    $("#mute").classList.toggle("muted", state.muted);
  }

  // ---------------------------------------------------------------- login
  async function login(token) {
    state.token = token;
    try {
      state.me = await api("/me");
    } catch (_) { return; }
    sessionStorage.setItem("cs_token", token);
    showError(null);
    $("#login").hidden = true; $("#main").hidden = false;
    $("#mute").hidden = false; $("#logout").hidden = false;
    $("#who").textContent = `${state.me.name} · ${state.me.role}` + (state.me.can.view === "network" ? " (network alerts)" : "");
    renderMute();
    await reload();
    connect();
  }
  function logout(msg) {
    sessionStorage.removeItem("cs_token");
    state.token = null; state.me = null;
    if (state.es) { state.es.close(); state.es = null; }
    clearTimeout(state.retry);
    state.alerts.clear();
    $("#main").hidden = true; $("#login").hidden = false;
    $("#mute").hidden = true; $("#logout").hidden = true;
    $("#who").textContent = "";
    setLive(false);
    showError(msg || null);
  }

  // ---------------------------------------------------------------- data
  async function reload() {
    const list = await api("/alerts?state=active&limit=2000");
    state.alerts.clear();
    for (const a of list) state.alerts.set(a.id, a);
    render();
  }
  function setLive(on) {
    const l = $("#live");
    l.textContent = on ? "live" : "offline";
    l.className = on ? "on" : "off";
  }
  async function connect() {
    if (state.es) { state.es.close(); state.es = null; }
    if (!state.token) return;
    let t;
    try { t = await api("/alerts/stream/ticket", { method: "POST" }); } catch (_) { scheduleReconnect(); return; }
    const es = new EventSource(`${API}/alerts/stream?ticket=${encodeURIComponent(t.ticket)}`);
    state.es = es;
    es.addEventListener("hello", () => { setLive(true); });
    es.addEventListener("alert", (ev) => {
      let c;
      try { c = JSON.parse(ev.data); } catch (_) { return; }
      if (c.kind === "resync") { reload().catch(() => {}); return; }
      onChange(c);
    });
    es.onerror = () => {
      // tickets are single use: reconnect with a new one, and reload what we missed
      setLive(false);
      es.close();
      if (state.es === es) state.es = null;
      scheduleReconnect();
    };
  }
  function scheduleReconnect() {
    clearTimeout(state.retry);
    state.retry = setTimeout(async () => {
      if (!state.token) return;
      try { await reload(); } catch (_) { /* shown */ }
      connect();
    }, 2000);
  }
  function onChange(c) {
    const a = c.alert;
    if (!a) return;
    const old = state.alerts.get(a.id);
    if (a.state === "resolved") state.alerts.delete(a.id);
    else state.alerts.set(a.id, a);
    if (a.severity === "critical" && a.state === "firing" && !a.suppressed &&
        (!old || old.state !== "firing" || old.severity !== "critical")) beep();
    render();
    if (state.selected === a.id) showDetail(a.id).catch(() => {});
  }

  // ---------------------------------------------------------------- rendering
  const SEV = { critical: 0, warning: 1, info: 2 };
  function visible() {
    const b = $("#f-building").value, s = $("#f-severity").value, un = $("#f-unacked").checked;
    const out = [];
    for (const a of state.alerts.values()) {
      if (b && (a.labels.building || "") !== b) continue;
      if (s && a.severity !== s) continue;
      if (un && a.acked) continue;
      out.push(a);
    }
    // critical firing alerts pinned on top, then severity, newest first
    const pin = (a) => (a.severity === "critical" && a.state === "firing" ? 0 : 1);
    out.sort((x, y) => pin(x) - pin(y) || SEV[x.severity] - SEV[y.severity] || y.id - x.id);
    return out;
  }
  function updateBuildings() {
    const sel = $("#f-building"), cur = sel.value;
    const have = new Set([...sel.options].map((o) => o.value));
    const all = new Set([...state.alerts.values()].map((a) => a.labels.building).filter(Boolean));
    for (const b of [...all].sort()) if (!have.has(b)) sel.append(el("option", { value: b }, b));
    sel.value = cur;
  }
  function render() {
    updateBuildings();
    const tb = $("#alerts tbody");
    const rows = visible();
    tb.replaceChildren(...rows.map(row));
    const crit = rows.filter((a) => a.severity === "critical" && a.state === "firing").length;
    $("#count").textContent = `${rows.length} alert(s)` + (crit ? `, ${crit} critical` : "");
    if (!rows.length) tb.append(el("tr", { class: "empty" }, el("td", { colspan: 6 }, "No active alerts.")));
  }
  function row(a) {
    const can = state.me.can;
    const where = [a.labels.building, a.labels.room].filter(Boolean).join(" / ");
    const pinned = a.severity === "critical" && a.state === "firing";
    const cls = ["alert", `sev-${a.severity}`, `state-${a.state}`, pinned ? "pinned" : "", a.acked ? "acked" : "",
                 a.suppressed ? "suppressed" : "", state.selected === a.id ? "selected" : ""].join(" ");
    const btns = el("td", { class: "actions" });
    if (!a.acked) btns.append(el("button", { class: "ack", type: "button", onclick: (e) => { e.stopPropagation(); ack(a); } }, "Acknowledge"));
    else btns.append(el("span", { class: "ackd", title: a.ack_comment || "" }, `✓ ${a.acked_by}`));
    if (can.assign) btns.append(el("button", { class: "assign", type: "button", onclick: (e) => { e.stopPropagation(); assign(a); } }, "Assign"));
    if (can.silence) btns.append(el("button", { class: "silence", type: "button", onclick: (e) => { e.stopPropagation(); silence(a); } }, "Silence"));
    return el("tr", { class: cls, "data-alert-id": a.id, "data-severity": a.severity, onclick: () => showDetail(a.id) },
      el("td", {}, el("span", { class: `sev sev-${a.severity}` }, a.severity)),
      el("td", {}, el("div", { class: "rule" }, a.rule, " · ", a.labels.device || a.labels.agent || ""),
         el("div", { class: "summary" }, a.summary || "")),
      el("td", {}, where),
      el("td", { title: fmt(a.fired_ms || a.started_ms) }, ago(a.fired_ms || a.started_ms)),
      el("td", {}, a.state, a.count > 1 ? ` ×${a.count}` : "", a.suppressed ? el("div", { class: "muted-by" }, a.suppressed) : "",
         a.assignee ? el("div", { class: "assignee" }, `→ ${a.assignee}`) : ""),
      btns);
  }

  // ---------------------------------------------------------------- actions
  async function ack(a) {
    try {
      const n = await api(`/alerts/${a.id}/ack`, { method: "POST", body: { comment: "acknowledged in console" } });
      state.alerts.set(n.id, n); render(); showError(null);
    } catch (_) { /* shown */ }
  }
  // A real <dialog>: focus moves into it, Esc or Cancel closes it (resolves null), focus returns.
  function ask(id, summary, values) {
    const dlg = $(id), form = dlg.querySelector("form"), opener = document.activeElement;
    form.reset();
    dlg.querySelector(".dlg-summary").textContent = summary;
    for (const [k, v] of Object.entries(values)) form.elements[k].value = v;
    return new Promise((resolve) => {
      const done = (v) => {
        form.onsubmit = dlg.onclose = null;
        if (dlg.open) dlg.close();
        if (opener && document.contains(opener)) opener.focus();
        resolve(v);
      };
      form.onsubmit = (e) => { e.preventDefault(); if (form.reportValidity()) done(Object.fromEntries(new FormData(form))); };
      dlg.querySelector("button.cancel").onclick = () => done(null);
      dlg.onclose = () => done(null);
      dlg.showModal();
      form.querySelector("input").focus();
    });
  }
  async function assign(a) {
    const got = await ask("#dlg-assign", `#${a.id} ${a.rule} · ${a.labels.device || a.labels.agent || ""}`,
                          { assignee: a.assignee || "" });
    if (got === null) return;
    try {
      const n = await api(`/alerts/${a.id}/assign`, { method: "POST", body: { assignee: got.assignee.trim() || null } });
      state.alerts.set(n.id, n); render();
    } catch (_) { /* shown */ }
  }
  async function silence(a) {
    const subj = a.labels.device ? `device=${a.labels.device}` : `agent=${a.labels.agent}`;
    const got = await ask("#dlg-silence", `${a.rule} for ${subj}`, { minutes: "60" });
    if (got === null) return;
    const m = Number(got.minutes);
    try {
      await api("/silences", { method: "POST", body: { matchers: [`rule=${a.rule}`, subj], duration_ms: m * 60000,
                                                       comment: "silenced in console" } });
      showError(null);
    } catch (_) { /* shown */ }
  }

  // ---------------------------------------------------------------- detail
  const num = (v) => String(+Number(v).toPrecision(4));
  function sparkline(points, threshold) {
    const W = 320, H = 60, P = 4;
    const pts = points.filter((p) => typeof p[1] === "number" || typeof p[1] === "boolean")
      .map((p) => [p[0], Number(p[1])]);
    const s = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "spark" });
    if (pts.length < 1) return s;
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
    const hasT = typeof threshold === "number";
    const x0 = Math.min(...xs), x1 = Math.max(...xs);
    const y0 = Math.min(...ys, ...(hasT ? [threshold] : [])), y1 = Math.max(...ys, ...(hasT ? [threshold] : []));
    const X = (x) => P + (x1 === x0 ? (W - 2 * P) / 2 : ((x - x0) / (x1 - x0)) * (W - 2 * P));
    const Y = (y) => H - P - (y1 === y0 ? (H - 2 * P) / 2 : ((y - y0) / (y1 - y0)) * (H - 2 * P));
    if (hasT) s.append(svg("line", { x1: P, x2: W - P, y1: Y(threshold), y2: Y(threshold), stroke: "#888",
                                     "stroke-dasharray": "4 3", class: "threshold" }));
    s.append(svg("polyline", { points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" "),
                                fill: "none", stroke: "#c62828", "stroke-width": "1.5" }));
    const last = pts[pts.length - 1];
    s.append(svg("circle", { cx: X(last[0]), cy: Y(last[1]), r: 2.5, fill: "#c62828" }));
    const lab = svg("text", { x: P, y: 11, "font-size": 10, fill: "#555" });
    lab.textContent = `${num(y0)} … ${num(y1)}` + (hasT ? ` (limit ${num(threshold)})` : "");
    s.append(lab);
    return s;
  }
  async function showDetail(id) {
    state.selected = id;
    const d = await api(`/alerts/${id}`);
    const box = $("#detail");
    const kids = [
      el("button", { class: "close", type: "button", onclick: () => { state.selected = null; box.hidden = true; render(); } }, "×"),
      el("h2", {}, `#${d.id} ${d.rule}`),
      el("p", { class: `sev sev-${d.severity}` }, `${d.severity} · ${d.state}`),
      el("p", { class: "summary" }, d.summary || ""),
      el("dl", {}, ...Object.entries(d.labels).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    ];
    if (d.samples && d.samples.series && d.samples.series.length) {
      kids.push(el("h3", {}, `Samples: ${d.samples.measurement}${d.samples.field ? "." + d.samples.field : ""}`));
      for (const s of d.samples.series.slice(0, 4)) {
        const tags = Object.entries(s.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ");
        kids.push(el("div", { class: "series" }, el("div", { class: "tags" }, tags), sparkline(s.points, d.samples.threshold)));
      }
    }
    if (d.events && d.events.length) {
      kids.push(el("h3", {}, "Events"));
      kids.push(el("ul", { class: "events" }, ...d.events.slice(-20).map((e) =>
        el("li", {}, `${fmt(e.ts_ms)} ${e.type} (${e.severity}) ${JSON.stringify(e.data || {})}`))));
    }
    kids.push(el("h3", {}, "History"));
    kids.push(el("ol", { class: "history" }, ...d.history.map((h) =>
      el("li", {}, el("time", {}, fmt(h.t_ms)), " ", el("b", {}, h.action), h.actor ? ` by ${h.actor}` : "",
         h.detail && (h.detail.comment || h.detail.assignee || h.detail.reason)
           ? ` — ${h.detail.comment || h.detail.assignee || h.detail.reason}` : ""))));
    if (!d.acked && d.state !== "resolved") {
      // acknowledge with a comment and an optional expiry (the ack lapses; escalation resumes)
      const ackForm = el("form", { class: "ack-form", onsubmit: async (e) => {
        e.preventDefault();
        const mins = Number(ackForm.querySelector("select").value);
        const body = { comment: ackForm.querySelector("input").value.trim() || "acknowledged in console" };
        if (mins > 0) body.expires_ms = Date.now() + mins * 60000;
        try {
          const n = await api(`/alerts/${id}/ack`, { method: "POST", body });
          state.alerts.set(n.id, n); await showDetail(id);
        } catch (_) { /* shown */ }
      } }, el("input", { placeholder: "ack comment", "aria-label": "ack comment" }),
         el("select", { "aria-label": "ack expires" }, el("option", { value: "" }, "no expiry"),
            ...[[30, "30 min"], [60, "1 h"], [240, "4 h"], [480, "8 h"]].map(([v, t]) => el("option", { value: v }, `for ${t}`))),
         el("button", { type: "submit" }, "Acknowledge"));
      kids.push(ackForm);
    } else if (d.acked) {
      kids.push(el("p", { class: "acked-by" }, `Acknowledged by ${d.acked_by}` + (d.ack_comment ? ` — ${d.ack_comment}` : "") +
                   (d.ack_expires_ms ? ` (until ${fmt(d.ack_expires_ms)})` : "")));
    }
    const form = el("form", { class: "comment", onsubmit: async (e) => {
      e.preventDefault();
      const t = form.querySelector("input").value.trim();
      if (!t) return;
      try { await api(`/alerts/${id}/comment`, { method: "POST", body: { text: t } }); await showDetail(id); } catch (_) { /* shown */ }
    } }, el("input", { placeholder: "comment", "aria-label": "comment" }), el("button", { type: "submit" }, "Add"));
    kids.push(form);
    box.replaceChildren(...kids);
    box.hidden = false;
    render();
  }

  // ---------------------------------------------------------------- wiring
  $("#login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    audioCtx();  // created on a user gesture so later beeps may play
    login($("#token").value.trim());
  });
  $("#logout").addEventListener("click", () => logout());
  $("#mute").addEventListener("click", () => {
    state.muted = !state.muted;
    localStorage.setItem("cs_muted", state.muted ? "1" : "0");
    if (!state.muted) audioCtx();
    renderMute();
  });
  for (const id of ["#f-building", "#f-severity", "#f-unacked"]) $(id).addEventListener("change", render);
  setInterval(() => { if (state.me) render(); }, 30000);  // refresh the "since" column
  if (state.token) login(state.token);
})();
