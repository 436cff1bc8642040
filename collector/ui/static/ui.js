// campus-sense UI: shared helpers (CSRF header on API calls, translated strings, times in the
// campus time zone). Pages work without it except graphs and alert dialogs.
(function () {
  "use strict";
  const meta = document.querySelector('meta[name="csrf-token"]');
  const i18nEl = document.getElementById("i18n");
  const CS = window.CampusSense = {
    csrf: meta ? meta.content : "",
    tz: document.documentElement.dataset.tz || "Asia/Shanghai",
    lang: document.documentElement.lang || "en",
    t: {},
    api: async function (path, opts) {
      opts = opts || {};
      const headers = { "X-CSRF-Token": CS.csrf, "X-Campus-Sense-Client": "console" };
      if (opts.body !== undefined) headers["Content-Type"] = "application/json";
      const r = await fetch(path, { method: opts.method || "GET", headers, credentials: "same-origin",
                                    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined });
      if (!r.ok) {
        let msg = r.status + " " + r.statusText;
        try { const j = await r.json(); if (j && j.detail) msg = r.status + ": " + (typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail)); } catch (e) { /* not JSON */ }
        throw new Error(msg);
      }
      const ct = r.headers.get("content-type") || "";
      return ct.includes("json") ? r.json() : r.text();
    },
    fmt: function (key, vars) {
      let s = CS.t[key] || key;
      for (const k in (vars || {})) s = s.split("{" + k + "}").join(vars[k]);
      return s;
    },
  };
  try { CS.t = JSON.parse(i18nEl ? i18nEl.textContent : "{}"); } catch (e) { CS.t = {}; }
})();
