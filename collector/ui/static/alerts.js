// Alerts page and alert detail page. Live: a one-minute ticket (POST with the session's CSRF token) opens
// the SSE stream; every change re-fetches the server-rendered fragment (#alert-live[data-live], filters in
// its URL) and replaces it when it changed. A critical alert newly pinned on top (tr.pinned, rendered by
// the server) beeps (WebAudio, unlocked by a click or key; mute kept in localStorage) and the title
// counts them. Actions open real <dialog>s (focus moves in, Esc closes, focus returns), then POST to
// /api/v1/alerts/... and refresh the fragment.
(function () {
  "use strict";
  const CS = window.CampusSense;
  const box = document.getElementById("alert-live");
  const flash = document.getElementById("flash");
  const status = document.getElementById("live-status");
  const muteBtn = document.getElementById("mute");
  const detailId = box ? box.dataset.alertId : null;
  const baseTitle = document.title;
  const MUTE_KEY = "cs-alert-muted";
  let opener = null, current = null, es = null, retryMs = 1000, timer = null, debounce = null;
  let busy = null, again = false, audio = null;
  let muted = localStorage.getItem(MUTE_KEY) === "1";

  // ------------------------------------------------------------ pinned criticals: beep, title
  const pinnedIds = () => new Set([...document.querySelectorAll("#alert-live tr.pinned[data-alert-id]")]
    .map(r => r.dataset.alertId));
  let known = pinnedIds();
  function setTitle() {
    const n = pinnedIds().size;
    document.title = (n ? "(" + n + ") " : "") + baseTitle;
  }
  function unlockAudio() {
    if (muted) return;
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!audio && AC) audio = new AC();
    if (audio && audio.state === "suspended") audio.resume();
  }
  function beep() {
    if (muted || !audio) return;
    const t = audio.currentTime;
    for (let i = 0; i < 3; i++) {
      const o = audio.createOscillator(), g = audio.createGain(), s = t + i * 0.25;
      o.type = "square"; o.frequency.value = 880;
      g.gain.setValueAtTime(0.0001, s);
      g.gain.exponentialRampToValueAtTime(0.2, s + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, s + 0.18);
      o.connect(g).connect(audio.destination);
      o.start(s); o.stop(s + 0.2);
    }
    document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);
  }
  function renderMute() {
    if (!muteBtn) return;
    muteBtn.hidden = false;
    muteBtn.setAttribute("aria-pressed", muted ? "true" : "false");
  }

  // ------------------------------------------------------------ live fragment
  function focusKey() {
    const a = document.activeElement;
    if (!a || !box || !box.contains(a)) return null;
    if (a.dataset.action) return 'button[data-action="' + a.dataset.action + '"][data-alert="' + a.dataset.alert + '"]';
    return a.getAttribute("href") ? 'a[href="' + a.getAttribute("href") + '"]' : null;
  }
  async function refresh() {
    if (!box) return;
    if (busy) { again = true; return busy; }
    busy = (async () => {
      do {
        again = false;
        const r = await fetch(box.dataset.live, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (r.status === 401) { location.reload(); return; }
        if (!r.ok) throw new Error(r.status + " " + r.statusText);
        const html = await r.text();
        const digest = r.headers.get("X-Digest") || "";
        if (digest && digest === box.dataset.digest) continue;
        const keep = focusKey();
        box.innerHTML = html;
        box.dataset.digest = digest;
        const back = keep && box.querySelector(keep);
        if (back) back.focus();
        const now = pinnedIds(), fresh = [...now].filter(id => !known.has(id));
        known = now;
        setTitle();
        if (fresh.length) {
          beep();
          const row = box.querySelector('tr.pinned[data-alert-id="' + fresh[0] + '"] td:nth-child(2)');
          if (flash) flash.textContent = CS.fmt("alerts.new_critical", { summary: row ? row.textContent : "" });
        }
      } while (again);
    })().finally(() => { busy = null; });
    return busy;
  }
  function later() {
    clearTimeout(debounce);
    debounce = setTimeout(() => refresh().catch(() => drop()), 150);
  }
  function setStatus(kind) {
    if (!status) return;
    status.hidden = false;
    status.dataset.state = kind;
    status.textContent = CS.t["alerts.live." + kind] || kind;
  }
  async function connect() {
    clearTimeout(timer);
    let t;
    try {
      t = await CS.api("/api/v1/alerts/stream/ticket", { method: "POST" });
    } catch (e) {
      if (/^401/.test(e.message)) { location.reload(); return; }
      drop(); return;
    }
    es = new EventSource("/api/v1/alerts/stream?ticket=" + encodeURIComponent(t.ticket));
    es.addEventListener("hello", () => {
      retryMs = 1000;
      setStatus("on");
      later();          // whatever changed before (or while) the stream was down
    });
    es.addEventListener("alert", ev => {
      let c;
      try { c = JSON.parse(ev.data); } catch (e) { return; }
      if (c.kind === "resync" || !detailId || (c.alert && String(c.alert.id) === detailId)) later();
    });
    es.onerror = drop;   // tickets are single use: a new one for every reconnect
  }
  function drop() {
    if (es) { es.close(); es = null; }
    setStatus("reconnecting");
    clearTimeout(timer);
    timer = setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  }

  // ------------------------------------------------------------ dialogs
  function open(btn) {
    const kind = btn.dataset.action, dlg = document.getElementById("dlg-" + kind);
    if (!dlg) return;
    opener = btn;
    current = { kind: kind, id: btn.dataset.alert, device: btn.dataset.device, rule: btn.dataset.rule };
    const form = dlg.querySelector("form");
    form.reset();
    dlg.querySelector(".dlg-summary").textContent = btn.dataset.summary || "";
    const err = dlg.querySelector(".dlg-error");
    err.hidden = true; err.textContent = "";
    if (kind === "silence") {
      const m = ["rule=" + current.rule];
      if (current.device) m.push("device=" + current.device);
      form.elements.matchers.value = m.join(", ");
    }
    dlg.showModal();
    const first = form.querySelector("input:not([type=hidden]), textarea");
    if (first) first.focus();
  }

  async function submit(dlg, form) {
    const f = form.elements, id = current.id;
    const text = f.comment ? f.comment.value : "";
    let path = "/api/v1/alerts/" + id + "/" + current.kind, body = { comment: text };
    if (current.kind === "comment") body = { text: text };
    if (current.kind === "assign") body = { assignee: f.assignee.value, comment: text };
    if (current.kind === "silence") {
      path = "/api/v1/silences";
      body = { matchers: f.matchers.value.split(",").map(s => s.trim()).filter(Boolean), comment: text,
               duration_ms: Math.round(Number(f.hours.value) * 3600 * 1000) };
    }
    try {
      await CS.api(path, { method: "POST", body: body });
    } catch (e) {
      const err = dlg.querySelector(".dlg-error");
      err.textContent = (CS.t["dialog.failed"] || "failed") + ": " + e.message;
      err.hidden = false;
      return;
    }
    const done = dlg.querySelector("h2").textContent + " ✓";
    dlg.close();
    try { await refresh(); } catch (e) { location.reload(); return; }
    if (flash) flash.textContent = done;
  }

  document.addEventListener("click", ev => {
    const b = ev.target.closest && ev.target.closest("button[data-action]");
    if (b) open(b);
  });
  document.querySelectorAll("dialog.dlg").forEach(dlg => {
    const form = dlg.querySelector("form");
    form.addEventListener("submit", ev => { ev.preventDefault(); if (form.reportValidity()) submit(dlg, form); });
    dlg.querySelector("button.cancel").addEventListener("click", () => dlg.close());
    dlg.addEventListener("close", () => {
      // the button may have been replaced by a live update (or gone: acknowledged): its row, else <main>
      const sel = current ? 'button[data-action="' + current.kind + '"][data-alert="' + current.id + '"]' : null;
      const to = (opener && document.contains(opener) && opener) || (sel && document.querySelector(sel)) ||
        (current && document.querySelector('a[href="/ui/alerts/' + current.id + '"]')) || document.getElementById("main");
      to.focus();
    });
  });

  // ------------------------------------------------------------ wiring
  if (muteBtn) {
    muteBtn.addEventListener("click", () => {
      muted = !muted;
      localStorage.setItem(MUTE_KEY, muted ? "1" : "0");
      if (!muted) unlockAudio();
      renderMute();
    });
  }
  // browsers only let a page make sound after a user gesture
  document.addEventListener("pointerdown", unlockAudio, true);
  document.addEventListener("keydown", unlockAudio, true);
  renderMute();
  setTitle();
  if (box && window.EventSource) { setStatus("connecting"); connect(); }
})();
