"""InfluxDB v2 sink (influxdb-client write API, precision ms).

Only time series go here; metadata stays in SQLite. Batching: every ingest
commit group is one or more synchronous write requests (``chunk_lines`` lines
each) issued *before* the SQLite commit, so a group is acknowledged on MQTT only
when InfluxDB has accepted it. Line protocol is built directly (much cheaper
than ``Point`` objects). Tags: ``device``, the sample's tags, and ``site``, ``building``,
``agent`` from the MQTT topic it arrived on (what dashboards filter by; the topic wins over a
sample tag of the same name); fields keep their types (int -> ``i``, float, bool, string).
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from .base import Origin, TimeSeriesSink

log = logging.getLogger("collector.influx")

_MEAS = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_TAG = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\=", "\n": r"\n"})


def _prefix(m: str, d: str, tags: dict, origin: tuple[str, str, str] | None = None) -> str:
    if origin:
        tags = {**tags, "site": origin[0], "building": origin[1], "agent": origin[2]}
    head = m.translate(_MEAS) + ",device=" + d.translate(_TAG)
    for k in sorted(tags):
        v = tags[k]
        if v and k != "device":
            head += "," + k.translate(_TAG) + "=" + v.translate(_TAG)
    return head + " "


_fkeys: dict[str, str] = {}


def _fields(f: dict) -> str:
    """Line-protocol field set; '' if no field has a representable value."""
    parts = []
    fk = _fkeys
    for k, v in f.items():
        kk = fk.get(k)
        if kk is None:
            kk = fk[k] = k.translate(_TAG) + "="
        t = type(v)
        if t is float:
            if v - v == 0.0:  # not NaN/inf
                parts.append(kk + repr(v))
        elif t is int:
            parts.append(f"{kk}{v}i")
        elif t is bool:
            parts.append(kk + ("true" if v else "false"))
        elif t is str:
            parts.append(kk + '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"')
    return ",".join(parts)


def to_line(it: dict, origin: tuple[str, str, str] | None = None) -> str | None:
    fs = _fields(it["f"])
    if not fs:
        return None
    return f"{_prefix(it['m'], it['d'], it.get('tags') or {}, origin)}{fs} {it['t']}"


class InfluxSink(TimeSeriesSink):
    name = "influxdb"

    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_s: float = 10.0,
                 chunk_lines: int = 50000, writers: int = 4):
        self.url, self.org, self.bucket = url, org, bucket
        self.chunk = chunk_lines
        self.client = InfluxDBClient(url=url, token=token or "none", org=org, timeout=int(timeout_s * 1000),
                                     connection_pool_maxsize=max(writers, 4))
        self.api = self.client.write_api(write_options=SYNCHRONOUS)
        self.written = 0
        self._written_lock = threading.Lock()
        self._prefixes: dict[tuple, str] = {}
        # ``writers`` sends at once (the partitions of one collector commit in parallel; each group
        # waits for its own write, so per-agent order stays the commit order)
        self._pool = ThreadPoolExecutor(writers, thread_name_prefix="influx-write")

    def ping(self) -> bool:
        return self.client.ping()

    def write(self, samples: list[dict[str, Any]], origin: Origin | None = None) -> None:
        self.write_end(self.write_begin([(origin, samples)]))

    def write_begin(self, batches: list[tuple[Origin | None, list[dict[str, Any]]]]):
        """Build the lines here, send them from a helper thread (the HTTP wait overlaps with the
        store's SQLite work for the same group)."""
        lines: list[str] = []
        for origin, samples in batches:
            lines += self._lines(samples, origin)
        return self._pool.submit(self._send, lines)

    def write_end(self, handle) -> None:
        handle.result()

    def _send(self, lines: list[str]) -> None:
        for i in range(0, len(lines), self.chunk):
            self.api.write(bucket=self.bucket, org=self.org, record="\n".join(lines[i:i + self.chunk]),
                           write_precision=WritePrecision.MS)
        with self._written_lock:
            self.written += len(lines)

    def _lines(self, samples: list[dict[str, Any]], origin: Origin | None = None) -> list[str]:
        lines = []
        cache = self._prefixes
        for it in samples:
            fs = _fields(it["f"])
            if not fs:
                continue
            m, d, tags = it["m"], it["d"], it.get("tags")
            key = (origin, m, d, *tags.items()) if tags else (origin, m, d)
            p = cache.get(key)
            if p is None:
                if len(cache) > 1_000_000:
                    cache.clear()
                p = cache[key] = _prefix(m, d, tags or {}, origin)
            lines.append(f"{p}{fs} {it['t']}")
        return lines

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        try:
            self.api.close()
            self.client.close()
        except Exception:  # noqa: BLE001
            pass
