"""Disk budget of the embedded store (collector/store/disk.py): early deletion oldest raw first,
days-to-full projection, /health, the store_disk_budget event."""
import random

from fastapi.testclient import TestClient

from campus_sense import wire
from collector.config import MQTT, Disk
from collector.ingest import Ingest
from collector.store.disk import DAY, HOUR, DiskBudget
from collector.store.sqlite import SQLiteStore
from tests.collector_util import iface

T0 = 1_795_000_000_000 - 1_795_000_000_000 % DAY   # midnight UTC
DAYS = 5


def msg(seq, items, kind="metrics", agent="a1", epoch="e1"):
    payload = wire.encode_durable(kind, agent, epoch, seq, 0, [wire.encode_item(i) for i in items])
    return wire.decode(wire.topic("s", "b", agent, kind), payload)


def _fill(s: SQLiteStore) -> int:
    """DAYS days of 8 ports of two switches every 60 s (noisy rates), sealed day by day."""
    s._next_retention = float("inf")   # only the explicit retention(now) below (T0 is in the past)
    rnd = random.Random(7)
    seq = 0
    for h in range(DAYS * 24):
        items = []
        for m in range(60):
            t = T0 + h * HOUR + m * 60_000
            for dev in ("sw1", "sw2"):
                for idx in range(1, 9):
                    items.append(iface(dev, t, idx, in_bps=rnd.random() * 1e6, out_bps=rnd.random() * 1e5,
                                       in_errors=rnd.randrange(3)))
        seq += 1
        s.apply([msg(seq, items)], [])
        if h % 24 == 23:
            s.seal(now_ms=T0 + (h + 1) * HOUR + 60_000)
    return T0 + DAYS * DAY


def _raw_chunks(s: SQLiteStore) -> list[int]:
    return [r[0] for r in s.reader().execute("SELECT start_ms FROM chunks WHERE res=0 ORDER BY start_ms")]


def test_early_deletion_oldest_raw_first_and_under_budget(tmp_path):
    s = SQLiteStore(str(tmp_path / "c.db"), disk=Disk(max_bytes=1 << 40, min_free_bytes=0))
    now = _fill(s)
    assert s.retention(now) == {}          # nothing expired by class, far under 1 TiB
    before = _raw_chunks(s)
    assert before[0] == T0 and len(s.reader().execute("SELECT 1 FROM chunks WHERE res=300000").fetchall())
    n5m = s.reader().execute("SELECT count(*) FROM chunks WHERE res=300000").fetchone()[0]
    old = s.reader().execute("SELECT sum(length(data)) FROM chunks WHERE res=0 AND end_ms <= ?",
                             (now - 2 * DAY,)).fetchone()[0]
    r = s.reader()
    usage = r.execute("PRAGMA page_size").fetchone()[0] * (
        r.execute("PRAGMA page_count").fetchone()[0] - r.execute("PRAGMA freelist_count").fetchone()[0])
    assert old > usage // 5, (old, usage)    # raw data is a good part of the file
    # a budget that half the old raw chunks bring us back under
    s.disk.max_bytes = int((usage - old // 2) / 0.9)
    assert s.disk_status()["over_warn"]
    out = s.retention(now)
    assert out.get("early_raw", 0) > 0 and set(out) == {"early_raw"}, out
    after = _raw_chunks(s)
    assert after == before[len(before) - len(after):]      # the oldest went, in order
    assert min(after) > T0 and max(after) == max(before)
    assert s.reader().execute("SELECT count(*) FROM chunks WHERE res=300000").fetchone()[0] == n5m
    st = s.disk_status()
    assert st["usage_bytes"] <= 0.9 * s.disk.max_bytes, st
    assert st["enforced_total"] == out["early_raw"] and not st["over_warn"]
    # the series still answers for the newest days
    pts = s.series("interface", "sw1", "in_bps", now - DAY, now, None, None, 10)
    assert pts
    s.close()


def test_early_deletion_never_the_newest_day(tmp_path):
    s = SQLiteStore(str(tmp_path / "c.db"), disk=Disk(max_bytes=1 << 40, min_free_bytes=0))
    now = _fill(s)
    s.retention(now)
    s.disk.max_bytes = 4096                 # impossible: everything allowed goes, the newest day stays
    out = s.retention(now)
    assert out.get("early_raw") and out.get("early_5m") and out.get("early_1h"), out
    rows = s.reader().execute("SELECT res, min(start_ms) FROM chunks GROUP BY res").fetchall()
    for res, lo in rows:
        if res in (300000, HOUR):
            assert lo >= now - DAY - res or lo >= now - 2 * DAY, (res, lo)
        if res == 0:
            assert lo >= now - 2 * DAY
    assert s.reader().execute("SELECT count(*) FROM chunks WHERE res=0 AND start_ms >= ?",
                              (now - DAY,)).fetchone()[0] > 0
    s.close()


def test_days_to_full_from_two_samples(tmp_path):
    p = tmp_path / "x.db"
    p.write_bytes(b"\0" * 10_000)
    d = DiskBudget(str(p), max_bytes=30_000, min_free_bytes=0)
    assert d.status()["days_to_full"] is None and d.status()["growth_bytes_per_day"] is None
    d.sample(T0, 5_000)
    d.sample(T0 + DAY // 2, 7_500)     # 5000 bytes/day
    st = d.status()
    assert st["growth_bytes_per_day"] == 5000
    assert st["days_to_full"] == 4.0           # (30000 - 10000) / 5000
    assert st["budget_bytes"] == 30_000 and st["usage_bytes"] == 10_000
    # the free-space floor is nearer than max_bytes: budget = usage + free - min_free
    d2 = DiskBudget(str(p), max_bytes=None, min_free_bytes=0)
    d2.samples.extend(d.samples)
    assert d2.status()["budget_bytes"] == 10_000 + d2.free()
    d3 = DiskBudget(str(p), max_bytes=1 << 50, min_free_bytes=d.free() - 5_000)
    d3.samples.extend(d.samples)
    assert d3.status()["budget_bytes"] <= 15_000 and d3.status()["days_to_full"] <= 1.0
    # shrinking or flat: no projection
    d.sample(T0 + DAY, 7_000)
    assert d.status()["days_to_full"] is None or d.status()["growth_bytes_per_day"] > 0


def test_health_shows_disk_without_paths(tmp_path):
    from collector.api.app import create_app
    s = SQLiteStore(str(tmp_path / "c.db"), disk=Disk(max_bytes=10 << 20, min_free_bytes=0))
    s.disk.sample(T0, 100_000)
    s.disk.sample(T0 + DAY, 200_000)
    c = TestClient(create_app(s))
    r = c.get("/api/v1/health")
    assert r.status_code == 200
    d = r.json()["disk"]
    assert d["usage_bytes"] > 0 and d["budget_bytes"] == 10 << 20 and d["free_bytes"] > 0
    assert d["growth_bytes_per_day"] == 100_000 and d["days_to_full"] > 0 and d["enforced_total"] == 0
    assert str(tmp_path) not in r.text and "c.db" not in r.text
    s.close()


def test_disk_budget_event_reaches_events_table(tmp_path):
    s = SQLiteStore(str(tmp_path / "c.db"), disk=Disk(max_bytes=1 << 40, min_free_bytes=0))
    ing = Ingest(MQTT(host="127.0.0.1", port=1883, username="collector", password="x"), s)
    ing.process([])
    assert not s.events(None, None, None, None, "store_disk_budget", 10)   # no growth known: quiet
    usage = s.disk_status()["usage_bytes"]
    s.disk.max_bytes = usage + 10 * 1000          # 10 KB left, growing 1 KB/day: 10 days
    s.disk.sample(T0, usage - 1000)
    s.disk.sample(T0 + DAY, usage)
    ing._disk_next = 0
    ing.process([])
    ev = s.events(None, None, None, None, "store_disk_budget", 10)
    assert len(ev) == 1 and ev[0]["severity"] == "warning" and ev[0]["device"] == "collector"
    assert ev[0]["data"]["days_to_full"] < 14 and ev[0]["data"]["budget_bytes"] == s.disk.max_bytes
    ing._disk_next = 0
    ing.process([])                                  # still true: at most once an hour
    assert len(s.events(None, None, None, None, "store_disk_budget", 10)) == 1
    s.disk.max_bytes = 1 << 40                       # room again
    ing._disk_next = 0
    ing.process([])
    cl = s.events(None, None, None, None, "store_disk_budget_cleared", 10)
    assert len(cl) == 1 and cl[0]["severity"] == "info"
    # an early deletion raises it too
    s.disk.enforced_total += 3
    s.disk.last_enforced_ms = int(__import__("time").time() * 1000)
    ing._disk_next = 0
    ing.process([])
    ev = s.events(None, None, None, None, "store_disk_budget", 10)
    assert len(ev) == 2 and ev[0]["data"]["why"] == "deleted data early"
    s.close()


def test_default_rules_have_store_disk_budget():
    from pathlib import Path

    from collector.alertcore.config import load_rules
    rs = load_rules(Path(__file__).resolve().parents[1] / "firmware_configs" / "rules" / "campus-default.yaml")
    r = [r for r in rs.rules if r.name == "store-disk-budget"]
    assert len(r) == 1 and r[0].event == ["store_disk_budget"] and r[0].clear_event == ["store_disk_budget_cleared"]
