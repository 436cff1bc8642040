// Graphs on device and port pages: /api/v1/series with a step chosen from the range (rollups
// 5m/1h/1d beyond a few hours), drawn with the vendored uPlot in the campus time zone. Range
// buttons (1 hour .. 1 year) and drag-to-zoom (which re-reads the zoomed window at a finer step).
(function () {
  "use strict";
  const CS = window.CampusSense;
  const STEPS = [[2 * 3600, 60], [12 * 3600, 300], [3 * 86400, 900], [14 * 86400, 3600], [90 * 86400, 3 * 3600],
                 [Infinity, 86400]];
  function stepFor(spanS) { for (const [lim, st] of STEPS) if (spanS <= lim) return st; return 86400; }
  function human(v, unit) {
    if (v == null || isNaN(v)) return "–";
    if (unit === "bps") {
      const u = [[1e9, "Gb/s"], [1e6, "Mb/s"], [1e3, "kb/s"]];
      for (const [d, n] of u) if (Math.abs(v) >= d) return (v / d).toFixed(1) + " " + n;
      return v.toFixed(0) + " b/s";
    }
    return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2).replace(/\.?0+$/, "");
  }

  function setup(fig) {
    const dev = fig.dataset.device, fields = fig.dataset.fields.split(","), unit = fig.dataset.unit;
    const tags = fig.dataset.tags, agg = fig.dataset.agg || "avg";
    const plotEl = fig.querySelector(".plot"), sumEl = fig.querySelector(".gsummary");
    const labels = { in_bps: "graph.in", out_bps: "graph.out", in_errors: "graph.in_errors", out_errors: "graph.out_errors" };
    const colors = ["#0b5cad", "#d4731b"];
    let plot = null, seq = 0;

    async function load(startS, endS) {
      const my = ++seq;
      const span = endS - startS, step = stepFor(span);
      sumEl.textContent = CS.t["graph.loading"] || "…";
      try {
        const sums = fields.map(() => new Map());
        await Promise.all(fields.map(async (f, i) => {
          const p = new URLSearchParams({ measurement: "interface", device: dev, field: f, agg: agg,
            start: String(Math.floor(startS * 1000)), end: String(Math.ceil(endS * 1000)), step: String(step * 1000),
            limit: "100000" });
          if (tags) p.set("tags", tags);
          const res = await CS.api("/api/v1/series?" + p.toString());
          for (const s of res.series || []) for (const [t, v] of s.points) {
            if (typeof v !== "number") continue;
            const k = Math.round(t / 1000);
            sums[i].set(k, (sums[i].get(k) || 0) + v);
          }
        }));
        if (my !== seq) return;
        const xs = Array.from(new Set(sums.flatMap(m => Array.from(m.keys())))).sort((a, b) => a - b);
        const ys = sums.map(m => xs.map(x => (m.has(x) ? (unit === "bps" ? m.get(x) : m.get(x)) : null)));
        draw(xs, ys, startS, endS);
        fig.dataset.points = String(xs.length);
        if (!xs.length) { sumEl.textContent = CS.t["graph.nodata"] || "no data"; return; }
        sumEl.textContent = fields.map((f, i) => {
          const vals = ys[i].filter(v => v != null);
          const last = vals.length ? vals[vals.length - 1] : null, max = vals.length ? Math.max(...vals) : null;
          return CS.fmt("graph.summary", { name: CS.t[labels[f]] || f, last: human(last, unit), max: human(max, unit) });
        }).join(" · ");
      } catch (e) {
        if (my !== seq) return;
        fig.dataset.points = "error";
        sumEl.textContent = (CS.t["graph.error"] || "error") + ": " + e.message;
      }
    }

    function draw(xs, ys, startS, endS) {
      const width = Math.max(260, plotEl.clientWidth || fig.clientWidth - 20);
      const opts = {
        width: width, height: 220, tzDate: ts => uPlot.tzDate(new Date(ts * 1e3), CS.tz),
        scales: { x: { time: true, range: () => [startS, endS] } },
        series: [{}].concat(fields.map((f, i) => ({ label: CS.t[labels[f]] || f, stroke: colors[i % 2], width: 1.5,
          value: (u, v) => human(v, unit), spanGaps: false }))),
        axes: [{}, { size: 70, values: (u, vals) => vals.map(v => human(v, unit)) }],
        cursor: { drag: { x: true, y: false } },
        hooks: { setSelect: [u => {
          if (u.select.width < 5) return;
          const a = u.posToVal(u.select.left, "x"), b = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, width: 0 }, false);
          fig.querySelectorAll(".ranges button").forEach(x => x.setAttribute("aria-pressed", "false"));
          load(a, b);
        }] },
      };
      if (plot) plot.destroy();
      plotEl.textContent = "";
      plot = new uPlot(opts, [xs].concat(ys), plotEl);
    }

    fig.querySelectorAll(".ranges button").forEach(b => b.addEventListener("click", () => {
      fig.querySelectorAll(".ranges button").forEach(x => x.setAttribute("aria-pressed", String(x === b)));
      const now = Date.now() / 1000;
      load(now - Number(b.dataset.range), now);
    }));
    window.addEventListener("resize", () => { if (plot) plot.setSize({ width: Math.max(260, plotEl.clientWidth), height: 220 }); });
    const now = Date.now() / 1000;
    load(now - 3600, now);
  }

  document.querySelectorAll("figure.graph").forEach(setup);
})();
