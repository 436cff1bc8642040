"""InfluxDB v2 sink (influxdb-client write API, precision ms).

Only time series go here; metadata stays in SQLite. Batching: every ingest
commit group is one or more synchronous write requests (``chunk_lines`` lines
each) issued *before* the SQLite commit, so a group is acknowledged on MQTT only
when InfluxDB has accepted it. Line protocol is built directly (much cheaper
than ``Point`` objects). Tags: ``device`` plus the sample's tags; fields keep
their types (int -> ``i``, float, bool, string).
"""
from __future__ import annotations

import logging
from typing import Any

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from .base import TimeSeriesSink

log = logging.getLogger("collector.influx")

_MEAS = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_TAG = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\=", "\n": r"\n"})


def _fv(v: Any) -> str | None:
    t = type(v)
    if t is float:
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else None
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return f"{v}i"
    if t is str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return None


def to_line(it: dict) -> str | None:
    tags = it.get("tags") or {}
    head = it["m"].translate(_MEAS) + ",device=" + it["d"].translate(_TAG)
    for k in sorted(tags):
        v = tags[k]
        if v and k != "device":
            head += "," + k.translate(_TAG) + "=" + v.translate(_TAG)
    fields = []
    for k, v in it["f"].items():
        s = _fv(v)
        if s is not None:
            fields.append(k.translate(_TAG) + "=" + s)
    if not fields:
        return None
    return f"{head} {','.join(fields)} {it['t']}"


class InfluxSink(TimeSeriesSink):
    name = "influxdb"

    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_s: float = 10.0,
                 chunk_lines: int = 50000):
        self.url, self.org, self.bucket = url, org, bucket
        self.chunk = chunk_lines
        self.client = InfluxDBClient(url=url, token=token or "none", org=org, timeout=int(timeout_s * 1000))
        self.api = self.client.write_api(write_options=SYNCHRONOUS)
        self.written = 0

    def ping(self) -> bool:
        return self.client.ping()

    def write(self, samples: list[dict[str, Any]]) -> None:
        lines = [ln for ln in map(to_line, samples) if ln is not None]
        for i in range(0, len(lines), self.chunk):
            self.api.write(bucket=self.bucket, org=self.org, record="\n".join(lines[i:i + self.chunk]),
                           write_precision=WritePrecision.MS)
        self.written += len(lines)

    def close(self) -> None:
        try:
            self.api.close()
            self.client.close()
        except Exception:  # noqa: BLE001
            pass
