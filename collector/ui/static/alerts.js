// Alerts page: actions open real <dialog>s (keyboard: focus moves into the dialog, Esc closes,
// focus returns to the button), then POST to /api/v1/alerts/... with the session's CSRF token.
(function () {
  "use strict";
  const CS = window.CampusSense;
  const flash = document.getElementById("flash");
  let opener = null, current = null;

  function open(btn) {
    const kind = btn.dataset.action, dlg = document.getElementById("dlg-" + kind);
    if (!dlg) return;
    opener = btn;
    current = { kind: kind, id: btn.dataset.alert, device: btn.dataset.device, building: btn.dataset.building,
                rule: btn.dataset.rule };
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
    let path, body;
    switch (current.kind) {
      case "ack": path = "/api/v1/alerts/" + id + "/ack"; body = { comment: text }; break;
      case "comment": path = "/api/v1/alerts/" + id + "/comment"; body = { text: text }; break;
      case "assign": path = "/api/v1/alerts/" + id + "/assign"; body = { assignee: f.assignee.value, comment: text }; break;
      case "resolve": path = "/api/v1/alerts/" + id + "/resolve"; body = { comment: text }; break;
      case "silence":
        path = "/api/v1/silences";
        body = { matchers: f.matchers.value.split(",").map(s => s.trim()).filter(Boolean), comment: text,
                 duration_ms: Math.round(Number(f.hours.value) * 3600 * 1000) };
        break;
    }
    try {
      await CS.api(path, { method: "POST", body: body });
      dlg.close();
      sessionStorage.setItem("cs-flash", dlg.querySelector("h2").textContent + " ✓");
      location.reload();
    } catch (e) {
      const err = dlg.querySelector(".dlg-error");
      err.textContent = (CS.t["dialog.failed"] || "failed") + ": " + e.message;
      err.hidden = false;
    }
  }

  document.querySelectorAll("button[data-action]").forEach(b => b.addEventListener("click", () => open(b)));
  document.querySelectorAll("dialog.dlg").forEach(dlg => {
    const form = dlg.querySelector("form");
    form.addEventListener("submit", ev => { ev.preventDefault(); if (form.reportValidity()) submit(dlg, form); });
    dlg.querySelector("button.cancel").addEventListener("click", () => dlg.close());
    dlg.addEventListener("close", () => { if (opener && document.contains(opener)) opener.focus(); });
  });
  const msg = sessionStorage.getItem("cs-flash");
  if (msg && flash) { flash.textContent = msg; sessionStorage.removeItem("cs-flash"); }
})();
