#!/usr/bin/env python3
"""The embedded engine, chosen by measurement (issue 10): the same simulated switches as
bench/store.py written into DuckDB (embedded, columnar, compressed) and into the embedded store
(SQLite + compressed column chunks + rollups), same run.

    .venv/bin/pip install duckdb        # not a dependency of campus-sense: only this comparison
    .venv/bin/python bench/engines.py [--switches 4] [--days 3] [--per-apply 50]

Both get the messages agents send (one table item per switch poll: 48 ports x 18 fields as
columns) and decode them as the collector does (wire.decode). DuckDB: one table
`interface(ts, sid, <18 columns>)` (a series id per port, as the embedded store keeps it), each
commit group of --per-apply polls appended in one INSERT from NumPy arrays made of the decoded
columns, a CHECKPOINT at the end; one thread (`threads=1`) like the collector's ingest thread; no
rollups. The embedded store: decode + apply + hourly seals, as bench/store.py measures it. CPU =
time.process_time() of this process around the writes (DuckDB's threads included). Size = the
database file(s) after close. Query: 24 h of one port at 5 minutes (average of in_bps), best of 3.

Not a test: figures depend on the machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import store as bs  # noqa: E402  bench/store.py: the simulated week and the SQLite run

FIELDS = ("in_octets", "out_octets", "in_errors", "out_errors", "in_discards", "out_discards", "speed_mbps",
          "admin_up", "oper_up", "counter_bits", "in_bps", "out_bps", "in_errors_ps", "out_errors_ps",
          "in_discards_ps", "out_discards_ps", "util_in_pct", "util_out_pct")
TYPES = {"admin_up": "BOOLEAN", "oper_up": "BOOLEAN"}


def run_duckdb(path: str, a, t0: int) -> dict:
    import duckdb
    con = duckdb.connect(path, config={"threads": 1})
    cols = ", ".join(f"{f} {TYPES.get(f, 'DOUBLE' if f.endswith(('_bps', '_ps', '_pct')) else 'BIGINT')}"
                     for f in FIELDS)
    con.execute(f"CREATE TABLE interface(ts BIGINT, sid INTEGER, {cols})")
    sid_of: dict[tuple[str, str], int] = {}
    cpu = 0.0
    samples = seq = 0
    group: list = []

    def flush(group):
        nonlocal cpu
        c = time.process_time()
        tabs = [it for m in group for it in m.packed]
        n = sum(it["rows"] for it in tabs)
        d = {"ts": np.repeat(np.fromiter((it["t"] for it in tabs), np.int64, len(tabs)), [it["rows"] for it in tabs]),
             "sid": np.fromiter((sid_of.setdefault((it["d"], i), len(sid_of)) for it in tabs
                                 for i in it["tags"]["ifIndex"]), np.int32, n)}
        for f in FIELDS:     # the table's columns; a poll without rates yet has none (NULL)
            vals = [v for it in tabs for v in (it["f"].get(f) or [None] * it["rows"])]
            d[f] = np.array([np.nan if v is None else v for v in vals], np.float64) if None in vals else np.array(vals)
        con.execute("INSERT INTO interface SELECT * FROM d")
        cpu += time.process_time() - c

    for t, dev, ports in bs.week(a.switches, a.days, t0):
        seq += 1
        payload = bs.wire.pack(bs.wire.encode_durable("metrics", bs.AGENT, bs.EPOCH, seq, t,
                                                      bs.encoded_items(dev, t, ports)))
        c = time.process_time()
        group.append(bs.wire.decode(bs.TOPIC, payload))      # as the collector decodes it
        cpu += time.process_time() - c
        samples += len(ports)
        if len(group) >= a.per_apply:
            flush(group)
            group = []
    if group:
        flush(group)
    c = time.process_time()
    con.execute("CHECKPOINT")
    cpu += time.process_time() - c
    sid = sid_of[("sw-0", "7")]
    t_end = t0 + int(a.days * bs.DAY)
    best = float("inf")
    for _ in range(3):
        s = time.perf_counter()
        rows = con.execute("SELECT ts - ts % 300000 AS b, avg(in_bps) FROM interface WHERE sid = ? AND ts >= ? "
                           "AND ts < ? GROUP BY b ORDER BY b", (sid, t_end - bs.DAY, t_end)).fetchall()
        best = min(best, time.perf_counter() - s)
    con.close()
    size = sum(os.path.getsize(p) for p in (path, path + ".wal") if os.path.exists(p))
    return dict(samples=samples, cpu=cpu, size=size, query=(best, len(rows)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--switches", type=int, default=4)
    ap.add_argument("--days", type=float, default=3)
    ap.add_argument("--per-apply", type=int, default=50)
    a = ap.parse_args()
    a.rows = False
    now = int(time.time() * 1000)
    t_end = now - now % bs.HOUR
    t0 = t_end - int(a.days * bs.DAY)
    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    try:
        d = run_duckdb(str(work / "duck.db"), a, t0)
        s = bs.run_sqlite(str(work / "store.db"), a, t0, t_end)
    finally:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    n = d["samples"]
    nv = s["values"]
    cpu_s = s["cpu_decode"] + s["cpu_apply"] + s["cpu_seal"]
    q = s["queries"]["24 h, step 5m"]
    print(f"{a.switches} switches x 48 ports x {a.days:g} days at 60 s, {n:,} samples, {nv:,} field values; "
          f"{a.per_apply} polls per commit")
    print(f"{'':<38}{'embedded store (SQLite chunks)':>32}{'DuckDB':>16}")
    print(f"{'samples per CPU-second':<38}{n / cpu_s:>32,.0f}{n / d['cpu']:>16,.0f}")
    print(f"{'  what it includes':<38}{'decode+apply+seal, rollups':>32}{'decode+insert':>16}")
    print(f"{'bytes per value (file)':<38}{s['size'] / nv:>32.2f}{d['size'] / nv:>16.2f}")
    print(f"{'query 24 h of one port, step 5m':<38}{q[0] * 1000:>29.1f} ms{d['query'][0] * 1000:>13.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
