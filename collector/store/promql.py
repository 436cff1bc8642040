"""Reading time series back from VictoriaMetrics (its Prometheus query API with MetricsQL) for
``GET /series`` when they are written to it through the InfluxDB sink (``store.query_url``).

What the sink writes (collector/store/influx.py): measurement ``m`` and field ``f`` become the
metric ``m_f`` (VictoriaMetrics' InfluxDB line-protocol mapping), with the labels ``device``,
``site``, ``building``, ``agent`` and the sample's tags. Booleans arrive as 0/1, strings are not
stored there.

The answer has the shape of the embedded store's (``SQLiteStore.series``):

- without ``step``: raw samples from ``/api/v1/export``;
- with ``step``: ``<agg>_over_time(sel[step])`` (``rate``/``increase`` for counters) from
  ``/api/v1/query_range`` evaluated at the last millisecond of each bucket ``[b, b + step)`` with
  ``nocache=1`` (no timestamp shifting), so bucket ``b`` covers the same samples as in SQLite.
  VictoriaMetrics' rate treats any decrease as a counter reset (no 32-bit wrap arithmetic) and
  divides by the window, not by the time between the first and last sample: rates differ from
  the embedded store's by up to one poll interval's share at series edges.
"""
from __future__ import annotations

import math
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from campus_sense.wire import COUNTERS

from .base import SeriesBackendError

#: labels the sink adds; the rest are the sample's tags
ORIGIN_LABELS = ("device", "site", "building", "agent")
_FN = {"avg": "avg_over_time", "min": "min_over_time", "max": "max_over_time", "last": "last_over_time",
       "sum": "sum_over_time", "count": "count_over_time", "rate": "rate", "increase": "increase"}


def _q(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) else re.sub(r"[^A-Za-z0-9_]", "_", k)


class PromReader:
    def __init__(self, url: str, timeout_s: float = 10.0, max_series: int = 10_000):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_series = max_series

    def _get(self, path: str, params: dict[str, Any], lines: bool = False) -> Any:
        q = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=self.timeout_s) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise SeriesBackendError(f"{self.url}{path}: HTTP {e.code}: {e.read()[:300]!r}") from None
        except (urllib.error.URLError, OSError) as e:
            raise SeriesBackendError(f"{self.url}{path}: {e}") from None
        if lines:
            return [orjson.loads(ln) for ln in body.splitlines() if ln.strip()]
        doc = orjson.loads(body)
        if doc.get("status") != "success":
            raise SeriesBackendError(f"{self.url}{path}: {doc.get('error') or doc}")
        return doc["data"]

    def _selector(self, measurement: str, device: str | None, field: str | None,
                  tags: dict[str, str] | None) -> str:
        name = (f'__name__={_q(measurement + "_" + field)}' if field
                else f'__name__=~{_q(re.escape(measurement) + "_.+")}')
        parts = [name]
        if device:
            parts.append(f"device={_q(device)}")
        for k, v in (tags or {}).items():
            parts.append(f"{_label(k)}={_q(v)}")
        return "{" + ",".join(parts) + "}"

    def _entry_key(self, metric: dict, measurement: str) -> tuple[str, str, tuple]:
        field = metric.get("__name__", "")[len(measurement) + 1:]
        tags = tuple(sorted((k, v) for k, v in metric.items() if k not in ("__name__", *ORIGIN_LABELS)))
        return field, metric.get("device", ""), tags

    def series(self, measurement: str, device: str | None, field: str | None, start_ms: int | None,
               end_ms: int | None, step_ms: int | None, tags: dict[str, str] | None, limit: int,
               agg: str = "avg", now_ms: int | None = None) -> list[dict]:
        counters = COUNTERS.get(measurement, {})
        if agg in ("rate", "increase") and field and counters.get(field) is None:
            raise ValueError(f"agg={agg} needs a counter field; {measurement}.{field} is not a counter "
                             f"(counters: {', '.join(counters) or 'none'})")
        sel = self._selector(measurement, device, field, tags)
        end = end_ms if end_ms is not None else (now_ms or 0) or 2**53
        start = start_ms if start_ms is not None else 0
        by: dict[tuple[str, tuple], dict] = {}      # (device, tags) -> entry
        if not step_ms:
            rows = self._get("/api/v1/export", {"match[]": sel, "start": f"{start / 1000:.3f}",
                                                "end": f"{(end - 1) / 1000:.3f}"}, lines=True)
            for r in rows[: self.max_series]:
                f, dev, tg = self._entry_key(r["metric"], measurement)
                e = by.setdefault((dev, tg), {"measurement": measurement, "device": dev, "tags": dict(tg),
                                              "pts": {}})
                for t, v in zip(r["timestamps"], r["values"]):
                    if start <= t < end and v is not None and not (isinstance(v, float) and math.isnan(v)):
                        e["pts"].setdefault(t, {})[f] = v
        else:
            if agg in ("rate", "increase") and not field:
                sel = self._selector(measurement, device, None, tags)
                names = "|".join(re.escape(measurement + "_" + c) for c in counters) or "^$"
                sel = sel.replace(f'__name__=~{_q(re.escape(measurement) + "_.+")}', f"__name__=~{_q(names)}")
            # MetricsQL's keep_metric_names: the answer still says which field each series is
            expr = f"{_FN[agg]}({sel}[{step_ms}ms]) keep_metric_names"
            b0 = start - start % step_ms
            t0 = b0 + step_ms - 1
            if t0 >= end + step_ms:
                return []
            data = self._get("/api/v1/query_range", {
                "query": expr, "start": f"{t0 / 1000:.3f}", "end": f"{(end + step_ms - 1) / 1000:.3f}",
                "step": f"{step_ms}ms", "nocache": "1"})
            for r in data.get("result", [])[: self.max_series]:
                f, dev, tg = self._entry_key(r["metric"], measurement)
                e = by.setdefault((dev, tg), {"measurement": measurement, "device": dev, "tags": dict(tg),
                                              "pts": {}})
                for ts, v in r.get("values", []):
                    b = round(float(ts) * 1000) - step_ms + 1
                    if b >= end:
                        continue
                    x = float(v)
                    if math.isnan(x) or math.isinf(x):
                        continue
                    e["pts"].setdefault(b, {})[f] = x
        out = []
        n = 0
        truncated = False
        for e in sorted(by.values(), key=lambda e: (e["device"], sorted(e["tags"].items()))):
            pts = e.pop("pts")
            if field:
                e["field"] = field
                e["points"] = [[t, fs[field]] for t, fs in sorted(pts.items()) if field in fs]
            else:
                e["points"] = [[t, fs] for t, fs in sorted(pts.items())]
            if step_ms:
                e["resolution"] = "victoriametrics"
            if not e["points"]:
                continue
            if n + len(e["points"]) > limit:
                e["points"] = e["points"][: max(0, limit - n)]
                truncated = True
            n += len(e["points"])
            if e["points"]:
                out.append(e)
            if truncated:
                break
        if truncated and out:
            out[-1]["truncated"] = True
        return out
