"""Embedded time series (collector/store/series.py + codec.py): sealing, rollups against raw
aggregates, counter rates across a 32-bit wrap and a device restart, late samples, retention
classes, restart and SIGKILL recovery of the head, migration of a JSON-block database."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from campus_sense import wire
from collector.store import codec
from collector.store.series import DAY, HOUR, Retention
from collector.store.sqlite import SQLiteStore, stored_samples

T0 = 1_795_000_000_000 - 1_795_000_000_000 % DAY   # a UTC midnight in 2026
MIN = 60_000
FIXTURE = Path(__file__).parent / "fixtures" / "collector-v0-json-blocks.db"


def msg(seq, items, agent="a1", epoch="e1"):
    payload = wire.encode_durable("metrics", agent, epoch, seq, 0, [wire.encode_item(i) for i in items])
    return wire.decode(wire.topic("s", "b", agent, "metrics"), payload)


def switch_polls(minutes, start=T0):
    """Three ports polled every minute (a few ms of jitter): port 1 a 64-bit counter, port 2 a
    32-bit counter that wraps, port 3 a device restart (counter back near 0) at minute 700."""
    polls = []
    c = {1: 10**12, 2: 2**32 - 5_000_000, 3: 40_000_000}
    for i in range(minutes):
        t = start + i * MIN + (i * 7) % 13
        items = []
        for p in (1, 2, 3):
            step = 1_000_000 + (i % 17) * 1000 * p
            c[p] = (c[p] + step) % (2**32) if p == 2 else c[p] + step
            if p == 3 and i == 700:
                c[3] = 12_345
            f = {"in_octets": c[p], "counter_bits": 32 if p == 2 else 64, "in_bps": step * 8 / 60 + p / 7,
                 "oper_up": (i // 90) % 5 != 0 or p != 1, "in_errors": i // 100}
            items.append(wire.sample("interface", "sw", t, f, {"ifIndex": str(p)}))
        polls.append(items)
    return polls


def feed(s, polls, seq0=0, per_apply=60, tables=False):
    """Each poll as one message (``tables``: as agents send it, the ports as one table item)."""
    batch = []
    for k, items in enumerate(polls, seq0 + 1):
        batch.append(msg(k, wire.tabulate(items) if tables else items))
        if len(batch) == per_apply:
            s.apply(batch, [])
            batch = []
    if batch:
        s.apply(batch, [])


def reference(polls, port, field, step, agg):
    """Independent per-bucket aggregate of the raw samples (the definition rollups must meet)."""
    rows = [(it["t"], it["f"]) for items in polls for it in items if it["tags"]["ifIndex"] == str(port)]
    out: dict[int, list] = {}
    prev = None
    for t, f in rows:
        b = t - t % step
        acc = out.setdefault(b, [])
        if agg == "rate":
            if prev is not None:
                d = f[field] - prev[1]
                if d < 0:
                    bits = f["counter_bits"] if field == "in_octets" else 32
                    wrapped = f[field] + 2**bits - prev[1]
                    d = wrapped if bits <= 32 and 0 <= wrapped < 2**(bits - 1) else f[field]
                acc.append((d, t - prev[0]))
            prev = (t, f[field])
        else:
            acc.append(float(f[field]))
    res = []
    for b in sorted(out):
        acc = out[b]
        if agg == "rate":
            dt = sum(x[1] for x in acc)
            if dt:
                res.append([b, sum(x[0] for x in acc) / dt * 1000])
        elif acc:
            res.append([b, {"avg": sum(acc) / len(acc), "min": min(acc), "max": max(acc), "last": acc[-1],
                            "count": float(len(acc))}[agg]])
    return res


def points(s, field, step, agg, port, start=T0, end=T0 + 10 * DAY):
    r = s.series("interface", "sw", field, start, end, step, {"ifIndex": str(port)}, 100_000, agg)
    return (r[0]["points"], r[0].get("resolution")) if r else ([], None)


def close(a, b, rel=1e-12):
    assert [p[0] for p in a] == [p[0] for p in b]
    for (_, x), (_, y) in zip(a, b):
        assert x == pytest.approx(y, rel=rel, abs=1e-9)


@pytest.fixture
def two_days(tmp_path):
    s = SQLiteStore(str(tmp_path / "c.db"), synchronous="NORMAL")
    polls = switch_polls(2 * 24 * 60)
    feed(s, polls)
    yield s, polls
    s.close()


def test_rollups_equal_raw_aggregates_before_and_after_sealing(two_days):
    s, polls = two_days
    checks = [("in_bps", 5 * MIN, a, p) for a in ("avg", "min", "max", "last", "count") for p in (1, 3)]
    checks += [("in_bps", HOUR, "avg", 1), ("in_bps", DAY, "max", 2), ("in_bps", 2 * HOUR, "avg", 3)]
    checks += [("in_octets", st, "rate", p) for st in (5 * MIN, HOUR, DAY) for p in (1, 2, 3)]
    before = {c: points(s, c[0], c[1], c[2], c[3]) for c in checks}
    assert s.seal(T0 + 2 * DAY + 3 * HOUR) == len(polls) * 3
    assert s.engine.head == {}
    for c in checks:
        field, step, agg, port = c
        got, res = points(s, field, step, agg, port)
        want = reference(polls, port, field, step, agg)
        # float statistics of float fields are float32; counts and counter rates are exact
        rel = 1e-12 if agg in ("rate", "count") else 2e-7
        close(got, want, rel)
        assert before[c][0] == got           # the head answers the same before sealing
        assert res == {5 * MIN: "5m", HOUR: "1h", 2 * HOUR: "1h", DAY: "1d"}[step], c
    # the wrap (port 2) and the restart (port 3) never give a negative or absurd rate
    for port in (2, 3):
        rates = [v for _, v in points(s, "in_octets", HOUR, "rate", port)[0]]
        assert all(0 < v < 1e6 for v in rates), rates
    # raw points come back exactly as ingested, types included
    raw, res = points(s, "in_octets", None, "avg", 2, T0, T0 + HOUR)
    assert raw == [[it["t"], it["f"]["in_octets"]] for items in polls[:60] for it in items
                   if it["tags"]["ifIndex"] == "2"] and res is None
    one = s.series("interface", "sw", None, T0, T0 + 2 * MIN, None, {"ifIndex": "1"}, 10, "avg")[0]["points"]
    assert one == [[it["t"], it["f"]] for items in polls[:2] for it in items if it["tags"]["ifIndex"] == "1"]
    assert type(one[0][1]["oper_up"]) is bool and type(one[0][1]["in_octets"]) is int


def test_counter_rate_needs_a_counter(two_days):
    s, _ = two_days
    with pytest.raises(ValueError, match="not a counter"):
        s.series("interface", "sw", "in_bps", T0, T0 + DAY, HOUR, None, 10, "rate")
    with pytest.raises(ValueError, match="agg must be one of"):
        s.series("interface", "sw", "in_bps", T0, T0 + DAY, HOUR, None, 10, "median")


def test_day_rollups_from_the_hour_seals_equal_those_composed_after_a_restart(tmp_path):
    """The 1-hour and 1-day chunks of a day come from the hour seals' statistics kept in memory, or,
    after a restart in the middle of that day, from the 5-minute chunks: byte for byte the same."""
    polls = switch_polls(26 * 60)
    blobs = []
    for restart in (False, True):
        db = tmp_path / f"c{int(restart)}.db"
        s = SQLiteStore(str(db), synchronous="NORMAL")
        for h in range(26):
            feed(s, polls[h * 60:(h + 1) * 60], seq0=h * 60)
            s.seal(T0 + (h + 1) * HOUR + 10 * MIN)
            if restart and h == 13:
                s.close()
                s = SQLiteStore(str(db), synchronous="NORMAL")
                assert not s.engine._hours
        assert s.engine.day_wm == T0 + DAY and not any(s.engine._hours.get(g, {}).get(h) for g in s.engine._hours
                                                        for h in range(T0, T0 + DAY, HOUR))
        s.close()
        c = sqlite3.connect(db)
        blobs.append(c.execute("SELECT res, start_ms, data FROM chunks WHERE res IN (?, ?) ORDER BY grp, res, start_ms",
                               (HOUR, DAY)).fetchall())
        c.close()
    assert blobs[0] and blobs[0] == blobs[1]


def test_late_sample_is_merged_into_its_sealed_hour_and_day(two_days):
    s, polls = two_days
    s.seal(T0 + 2 * DAY + 3 * HOUR)
    day1 = points(s, "in_bps", DAY, "count", 1)[0]
    late = T0 + 3 * HOUR + 30 * MIN + 5000         # between two polls of an hour sealed long ago
    s.apply([msg(10**6, [wire.sample("interface", "sw", late, {"in_bps": 1e12}, {"ifIndex": "1"})])], [])
    # before the next seal the head already answers with it
    close(points(s, "in_bps", 5 * MIN, "max", 1, T0 + 3 * HOUR + 30 * MIN, T0 + 3 * HOUR + 35 * MIN)[0],
          [[T0 + 3 * HOUR + 30 * MIN, 1e12]], 2e-7)
    s.seal(T0 + 2 * DAY + 4 * HOUR)
    close(points(s, "in_bps", 5 * MIN, "max", 1, T0 + 3 * HOUR + 30 * MIN, T0 + 3 * HOUR + 35 * MIN)[0],
          [[T0 + 3 * HOUR + 30 * MIN, 1e12]], 2e-7)    # float32 statistics
    assert points(s, "in_bps", DAY, "count", 1)[0][0][1] == day1[0][1] + 1
    assert points(s, "in_bps", DAY, "max", 1)[0][0][1] == pytest.approx(1e12, rel=2e-7)
    assert [p[0] for p in points(s, "in_bps", None, "avg", 1, late, late + 1)[0]] == [late]


def mixed_polls(minutes, start=T0):
    """Five ports a minute with what drivers really send besides numbers: a field that is an int
    in the first half hour and a float after it, a missing (None) value now and then, a string state,
    and a second sample of one series at the same millisecond (another driver's fields)."""
    polls = []
    for i in range(minutes):
        t = start + i * MIN + (i * 5) % 11
        items = []
        for p in range(1, 6):
            f = {"in_octets": 10**9 * p + i * 1000 * p, "temp": (40 + p) if i < 30 else 40.5 + p + i / 100,
                 "oper_up": i % 7 != p, "state": "up" if i % 9 else "testing",
                 "in_bps": None if (i + p) % 13 == 0 else i * 8.0 + p}
            items.append(wire.sample("interface", "sw", t, f, {"ifIndex": str(p)}))
        items.append(wire.sample("interface", "sw", t, {"poe_w": i / 10}, {"ifIndex": "1"}))
        polls.append(items)
    return polls


def _everything(s, end):
    """What readers see: raw samples of every field, 5-minute averages, the latest values."""
    raw = s.series("interface", "sw", None, T0, end, None, None, 10**6)
    avg = {f: s.series("interface", "sw", f, T0, end, 5 * MIN, None, 10**6, "avg")
           for f in ("in_bps", "temp", "oper_up", "poe_w")}
    rate = s.series("interface", "sw", "in_octets", T0, end, 5 * MIN, None, 10**6, "rate")
    one = (s.series("interface", "sw", None, T0, end, None, {"ifIndex": "2"}, 10**6),
           s.series("interface", "sw", "temp", T0, end, 5 * MIN, {"ifIndex": "3"}, 10**6, "max"))
    assert len(one[0]) == len(one[1]) == 1
    return raw, avg, rate, one, sorted(s.latest("sw", "interface"), key=lambda x: x[0]["ifIndex"])


def test_head_column_blocks_answer_and_seal_like_rows(tmp_path, monkeypatch):
    """The head transposes a bucket into column blocks once COMPACT_ROWS rows arrived; readers and
    sealing must not see a difference (types, missing values, same-millisecond merges across a
    block boundary, a field changing from int to float between blocks), nor whether the samples
    came as rows or as table items (a table and a row of the same bucket in one commit, too)."""
    from collector.store import series
    polls = mixed_polls(150)                      # 2.5 hours, 6 samples a minute
    late_dup = msg(10**5, [wire.sample("interface", "sw", polls[10][0]["t"], {"fw": "1.2"}, {"ifIndex": "1"})])
    seen = {}
    for name, rows, tables in (("blocks", 7, False), ("rows", 10**9, False), ("tables", 7, True),
                               ("tables-pending", 10**9, True)):
        monkeypatch.setattr(series, "COMPACT_ROWS", rows)
        s = SQLiteStore(str(tmp_path / f"{name}.db"), synchronous="OFF")
        feed(s, polls, per_apply=5, tables=tables)
        s.apply([late_dup], [])                   # same series and ms as a sample 140 minutes earlier
        buckets = [b for hg in s.engine.head.values() for b in hg.values()]
        assert sum(map(len, buckets)) == sum(map(len, polls)) + 1
        seen[name] = {"blocks": sum(len(b.blocks) for b in buckets), "head": _everything(s, T0 + 3 * HOUR)}
        s.seal(T0 + 5 * HOUR)
        assert s.engine.head == {}
        seen[name]["sealed"] = _everything(s, T0 + 3 * HOUR)
        seen[name]["chunks"] = [(r, *(x.tolist() for x in codec.decode(d)[:2]), codec.decode(d)[2])
                                for r, d in s.reader().execute("SELECT res, data FROM chunks ORDER BY res, start_ms")]
        seen[name]["merged"] = s.counters.get("same_time_merged")
        s.close()
    assert seen["blocks"]["blocks"] >= 30 and seen["rows"]["blocks"] == 0
    assert seen["tables"]["blocks"] >= 30   # (and "tables-pending" transposes when a bucket switches kind)
    for name in ("tables", "tables-pending"):
        for k in ("head", "sealed", "chunks", "merged"):
            assert seen[name][k] == seen["rows"][k], (name, k)
    b, r = seen["blocks"], seen["rows"]
    assert b["head"] == r["head"] and b["sealed"] == r["sealed"] and b["chunks"] == r["chunks"]
    assert b["head"] == b["sealed"]
    raw = b["sealed"][0]
    p1 = [e for e in raw if e["tags"] == {"ifIndex": "1"}][0]["points"]
    t10 = polls[10][0]["t"]
    assert [f for t, f in p1 if t == t10] == [{**polls[10][0]["f"], "poe_w": 1.0, "fw": "1.2"}]
    assert type(dict(p1)[polls[0][0]["t"]]["temp"]) is int and type(dict(p1)[polls[40][0]["t"]]["temp"]) is float
    assert "in_bps" not in dict(p1)[polls[12][0]["t"]]                  # (12 + 1) % 13 == 0: None, not stored
    # each same-millisecond pair was merged within its commit and counted once, sealing added none
    assert b["merged"] == r["merged"] == 150


def test_late_sample_merge_is_counted_once(tmp_path):
    s = SQLiteStore(str(tmp_path / "c.db"), synchronous="OFF")
    feed(s, switch_polls(120))
    s.seal(T0 + 3 * HOUR)
    assert s.counters.get("same_time_merged", 0) == 0
    t = switch_polls(1)[0][0]["t"]                       # the first sample of port 1 again, a field more
    s.apply([msg(10**6, [wire.sample("interface", "sw", t, {"fw": "2.0"}, {"ifIndex": "1"})])], [])
    assert s.counters.get("same_time_merged", 0) == 0     # nothing to merge with in its commit
    s.seal(T0 + 4 * HOUR)
    assert s.counters["same_time_merged"] == 1           # merged into the sealed hour
    got = s.series("interface", "sw", None, t, t + 1, None, {"ifIndex": "1"}, 10)[0]["points"]
    assert got == [[t, {**switch_polls(1)[0][0]["f"], "fw": "2.0"}]]
    s.close()


def test_retention_deletes_exactly_each_class(tmp_path):
    s = SQLiteStore(str(tmp_path / "c.db"), synchronous="NORMAL",
                    retention=Retention(raw_days=1, rollup_5m_days=2, rollup_1h_days=3, rollup_1d_days=None))
    polls = switch_polls(5 * 24 * 60)
    feed(s, polls, per_apply=240)
    now = T0 + 5 * DAY + 10 * MIN
    s.seal(now)
    con = sqlite3.connect(s.path)
    q = "SELECT res, count(*) FROM chunks WHERE end_ms {} ? GROUP BY res"
    keep = {0: DAY, 300_000: 2 * DAY, HOUR: 3 * DAY}
    doomed = {res: dict(con.execute(q.format("<="), (now - k,)).fetchall()).get(res, 0) for res, k in keep.items()}
    kept = {res: dict(con.execute(q.format(">"), (now - k,)).fetchall()).get(res, 0) for res, k in keep.items()}
    days = dict(con.execute("SELECT res, count(*) FROM chunks GROUP BY res").fetchall())[DAY]
    assert all(doomed.values()) and all(kept.values())
    deleted = s.retention(now)
    assert deleted == {"chunks_raw": doomed[0], "chunks_5m": doomed[300_000], "chunks_1h": doomed[HOUR]}
    left = dict(con.execute("SELECT res, count(*) FROM chunks GROUP BY res").fetchall())
    assert left == {0: kept[0], 300_000: kept[300_000], HOUR: kept[HOUR], DAY: days}
    con.close()
    # the range older than the raw retention is still answered, from the rollups that cover it
    pts, res = points(s, "in_bps", 5 * MIN, "max", 1, T0, T0 + DAY)
    assert res == "1d" and len(pts) == 1
    assert pts[0][1] == pytest.approx(max(it["f"]["in_bps"] for items in polls[:1440] for it in items
                                          if it["tags"]["ifIndex"] == "1"), rel=2e-7)
    assert points(s, "in_bps", None, "avg", 1, T0, T0 + DAY)[0] == []      # raw is gone
    s.close()


def test_head_survives_restart_and_sigkill_without_duplicates(tmp_path):
    db = tmp_path / "c.db"
    polls = switch_polls(150)
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from tests.test_store_series import feed, switch_polls
        from collector.store.sqlite import SQLiteStore
        s = SQLiteStore({str(db)!r})
        feed(s, switch_polls(150), per_apply=10, tables=True)
        print("fed", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "fed"
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        p.kill()
    want = [(it["t"], it["tags"]["ifIndex"], it["f"]) for items in polls for it in items]
    got = lambda: [(x["t"], x["tags"]["ifIndex"], x["f"]) for x in stored_samples(str(db))]  # noqa: E731
    assert sorted(got()) == sorted(want)
    s = SQLiteStore(str(db))
    assert sum(len(rows) for hg in s.engine.head.values() for rows in hg.values()) == len(want)      # rebuilt from head_log
    assert s.seal(T0 + 2 * HOUR + 10 * MIN) > 0                          # hour 0 and 1 sealed, 2 stays in head
    s.close()
    s = SQLiteStore(str(db))
    assert sum(len(rows) for hg in s.engine.head.values() for rows in hg.values()) == 30 * 3
    assert sorted(got()) == sorted(want)
    assert len(points(s, "in_bps", None, "avg", 1, T0, T0 + DAY)[0]) == 150
    s.close()


def test_head_log_is_compressed_and_a_plain_one_of_before_still_reads(tmp_path):
    db = tmp_path / "c.db"
    polls = switch_polls(90)
    want = sorted((it["t"], it["tags"]["ifIndex"], it["f"]) for items in polls for it in items)
    s = SQLiteStore(str(db))
    feed(s, polls, per_apply=10)
    s.close()
    c = sqlite3.connect(db)
    rows = c.execute("SELECT id, payload FROM head_log").fetchall()
    assert rows and all(p[:4] == wire.ZSTD_FRAME for _, p in rows)
    plain = [(wire.unzstd(p), i) for i, p in rows]
    assert sum(map(len, (p for p, _ in plain))) > 2 * sum(len(p) for _, p in rows)      # 3 samples a message
    # a head log written before the compression: plain JSON payloads, read the same
    c.executemany("UPDATE head_log SET payload=? WHERE id=?", plain)
    c.commit()
    c.close()
    got = sorted((x["t"], x["tags"]["ifIndex"], x["f"]) for x in stored_samples(str(db)))
    assert got == want
    s = SQLiteStore(str(db))
    assert sum(map(len, (b for hg in s.engine.head.values() for b in hg.values()))) == len(want)
    assert len(points(s, "in_bps", None, "avg", 1, T0, T0 + DAY)[0]) == 90
    s.seal(T0 + 3 * HOUR)
    s.close()
    assert sorted((x["t"], x["tags"]["ifIndex"], x["f"]) for x in stored_samples(str(db))) == want


def test_head_log_keeps_an_agents_zstd_frame_as_received(tmp_path):
    """Agents send durable messages as zstd frames (wire.pack): the head log stores the frame
    itself (no second compression), and a restart reads it back."""
    db = tmp_path / "c.db"
    polls = switch_polls(30)
    frames = []
    s = SQLiteStore(str(db))
    for seq, items in enumerate(polls, 1):
        frame = wire.pack(wire.encode_durable("metrics", "a1", "e1", seq, 0, [wire.encode_item(i) for i in items]))
        m = wire.decode(wire.topic("s", "b", "a1", "metrics"), frame)
        m.raw = frame
        frames.append(frame)
        s.apply([m], [])
    s.close()
    c = sqlite3.connect(db)
    assert [p for (p,) in c.execute("SELECT payload FROM head_log ORDER BY id")] == frames
    c.close()
    s = SQLiteStore(str(db))
    assert len(points(s, "in_bps", None, "avg", 1, T0, T0 + DAY)[0]) == 30
    s.close()


def test_read_only_view_answers_from_the_head_log_like_the_store(tmp_path, monkeypatch):
    """`campus-sense report --db` opens a collector database read-only: unsealed samples come from
    the head log, filtered by time, series and field the same way as the live head."""
    from collector.store import series
    monkeypatch.setattr(series, "COMPACT_ROWS", 7)      # the live store answers from column blocks
    db = str(tmp_path / "c.db")
    s = SQLiteStore(db)
    feed(s, mixed_polls(90), per_apply=5)
    s.seal(T0 + 2 * HOUR)                               # hour 0 sealed, hour 1 in the head
    end = T0 + 2 * HOUR
    live = _everything(s, end)
    ro = SQLiteStore.open_readonly(db)
    try:
        assert _everything(ro, end) == live
        part = ro.series("interface", "sw", "temp", T0 + 70 * MIN, T0 + 80 * MIN, None, {"ifIndex": "4"}, 100)
        assert [p[0] for p in part[0]["points"]] == [it["t"] for items in mixed_polls(90)[70:80] for it in items
                                                     if it["tags"] == {"ifIndex": "4"}]
    finally:
        ro.close()
        s.close()


def test_chunks_encode_and_decode_from_many_threads_at_once():
    """zstd contexts are per thread: API threads read chunks while the writer seals."""
    import threading
    rows = [(sid, T0 + i * MIN, {"v": i * sid, "x": i / 7, "up": i % 3 == 0}) for sid in range(1, 40) for i in range(300)]
    from collector.store.series import transpose
    sids, ts, cols = transpose(rows)
    blob = codec.encode(sids, ts, cols)
    want = codec.decode(blob)
    bad = []

    def work():
        for _ in range(60):
            got = codec.decode(codec.encode(sids, ts, cols))
            if got[2] != want[2] or got[0].tolist() != want[0].tolist():
                bad.append(1)
    th = [threading.Thread(target=work) for _ in range(8)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    assert not bad


def test_json_block_database_migrates_without_loss(tmp_path):
    db = tmp_path / "collector.db"
    shutil.copy(FIXTURE, db)
    con = sqlite3.connect(db)
    want = sorted(
        (m, d, json.loads(tj).get("ifIndex"), ts, json.dumps({k: v for k, v in json.loads(f).items() if v is not None},
                                                             sort_keys=True))
        for m, d, tj, ts, f in con.execute(
            "SELECT s.measurement, s.device, s.tags, b.ts_ms, j.value FROM sample_blocks b, json_each(b.data) j "
            "JOIN series s ON s.id = CAST(j.key AS INTEGER) WHERE s.measurement != 'fdb'"))
    fdb_series = con.execute("SELECT count(*) FROM series WHERE measurement = 'fdb'").fetchone()[0]
    assert con.execute("PRAGMA auto_vacuum").fetchone()[0] == 0 and len(want) == 2 * 1440 * 3
    con.close()
    s = SQLiteStore(str(db))
    got = sorted((x["m"], x["d"], x["tags"].get("ifIndex"), x["t"], json.dumps(x["f"], sort_keys=True))
                 for x in stored_samples(str(db)))
    assert got == want
    con = sqlite3.connect(db)
    assert not con.execute("SELECT 1 FROM sqlite_master WHERE name='sample_blocks'").fetchone()
    assert con.execute("PRAGMA auto_vacuum").fetchone()[0] == 2          # freed pages go back from now on
    levels = dict(con.execute("SELECT res, count(*) FROM chunks GROUP BY res").fetchall())
    con.close()
    assert levels[0] == 48 * 2 and levels[300_000] == 48 * 2 and levels[HOUR] >= 2 and levels[DAY] >= 2
    env = s.series("env", "room-101", "co2", T0, T0 + 2 * DAY, DAY, None, 10, "max")
    assert [p[1] for p in env[0]["points"]] == [429.0, 429.0] and env[0]["resolution"] == "1d"
    assert s.interfaces("sw1")[0]["ts_ms"] >= T0 + 2 * DAY - 2 * MIN
    s.close()
    assert os.path.getsize(db) < FIXTURE.stat().st_size / 2
    # the per-entry fdb series of that format became intervals: the MAC moved from port 3 to 5 at hour 30
    s = SQLiteStore(str(db))
    assert fdb_series == 3 and not [x for x in stored_samples(str(db)) if x["m"] == "fdb"]
    moves = [(r["ifIndex"], r["first_seen_ms"], r["last_seen_ms"])
             for r in s.mac_history("001a.2b3c.4d5e", T0, T0 + 2 * DAY)["fdb"]]
    assert sorted(moves) == [("3", T0, T0 + 30 * HOUR - 15 * MIN + (1785 % 7)),
                             ("5", T0 + 30 * HOUR + (1800 % 7), T0 + 2 * DAY - 15 * MIN + (2865 % 7))], moves
    s.close()


def test_snmp_interface_data_takes_under_3_bytes_per_value(tmp_path):
    """48 ports x one hour of the fields the SNMP driver emits: the raw chunk stays under 3 B/value."""
    import random
    r = random.Random(5)
    s = SQLiteStore(str(tmp_path / "c.db"), synchronous="NORMAL")
    octets = {p: [r.randrange(2**40), r.randrange(2**40)] for p in range(48)}
    values = 0
    for i in range(60):
        t = T0 + i * MIN + r.randint(0, 40)
        items = []
        for p in range(48):
            up = p % 9 != 0
            bps = [r.uniform(1e5, 3e8) if up else 0.0, r.uniform(1e5, 1e8) if up else 0.0]
            for k in (0, 1):
                octets[p][k] += int(bps[k] / 8 * 60)
            f = {"in_octets": octets[p][0], "out_octets": octets[p][1], "in_errors": 3, "out_errors": 0,
                 "in_discards": 17, "out_discards": 0, "speed_mbps": 1000, "admin_up": True, "oper_up": up,
                 "counter_bits": 64, "in_bps": bps[0], "out_bps": bps[1], "in_errors_ps": 0.0, "out_errors_ps": 0.0,
                 "in_discards_ps": 0.0, "out_discards_ps": 0.0, "util_in_pct": bps[0] / 1e7,
                 "util_out_pct": bps[1] / 1e7}
            values += len(f)
            items.append(wire.sample("interface", "core", t, f, {"ifIndex": str(p + 1), "ifName": f"Gi0/{p + 1}"}))
        s.apply([msg(i + 1, items)], [])
    s.seal(T0 + 3 * HOUR)
    size = sqlite3.connect(s.path).execute("SELECT sum(length(data)) FROM chunks WHERE res=0").fetchone()[0]
    assert size / values < 3.0, size / values
    s.close()


def test_codec_round_trip_and_corruption():
    cols = {"i": [1, None, -2**63, 2**63 - 1], "b": [True, None, False, True], "f": [0.1, float("inf"), None, -0.0],
            "mixed": [1, 2.5, None, 2**53], "huge": [2**64 - 1, 0, None, 1], "s": ["a", None, {"x": [1]}, 3]}
    sids, ts, got = codec.decode(codec.encode([1, 1, 2, 2], [5, 9, 5, 6], cols))
    assert sids.tolist() == [1, 1, 2, 2] and ts.tolist() == [5, 9, 5, 6]
    for k, v in cols.items():
        assert [(type(x), x) for x in got[k]] == [(type(x), x) for x in v], k
    with pytest.raises(codec.CodecError, match="not a campus-sense chunk"):
        codec.decode(b"junk")
    with pytest.raises(codec.CodecError, match="corrupt chunk"):
        codec.decode(codec.MAGIC + b"\x28\xb5\x2f\xfd garbage")


def _port_polls():
    """A switch whose rows change between polls: a port renamed, one added, two gone."""
    names = {1: "g1", 2: "g2", 3: "g3"}
    polls = []
    for i in range(6):
        if i == 2:
            names[2] = "uplink"
        if i == 3:
            names[4] = "g4"
        if i == 4:
            del names[1], names[2]
        polls.append([wire.sample("interface", "sw", T0 + i * MIN, {"in_bps": 10.0 * i + p, "oper_up": True},
                                  {"ifIndex": str(p), "ifName": n}) for p, n in sorted(names.items())])
    return polls


def test_tables_of_a_device_whose_rows_change_and_after_a_rollback(tmp_path, monkeypatch):
    """The store remembers a device's last table rows (series ids) to skip the per-row lookups:
    a renamed, added or removed row, and a transaction rolled back after it created series, must
    not leave samples under the wrong series."""
    want = sorted((x["t"], x["tags"]["ifName"], x["f"]["in_bps"]) for p in _port_polls() for x in p)
    s = SQLiteStore(str(tmp_path / "a.db"), synchronous="OFF")
    feed(s, _port_polls(), per_apply=1, tables=True)
    s.seal(T0 + 5 * HOUR)
    s.close()
    assert sorted((x["t"], x["tags"]["ifName"], x["f"]["in_bps"]) for x in stored_samples(str(tmp_path / "a.db"))) == want
    # a commit that created the series of sw-b's rows fails: its ids are free again and the next
    # device's new rows take them; sw-b's rows must then get series of their own
    s = SQLiteStore(str(tmp_path / "b.db"), synchronous="OFF")
    rows_b = [wire.sample("interface", "sw-b", T0, {"v": float(p)}, {"ifIndex": str(p)}) for p in range(3)]
    rows_c = [wire.sample("interface", "sw-c", T0, {"v": 10.0 + p}, {"ifIndex": str(p)}) for p in range(3)]
    real = s.engine.write_log
    monkeypatch.setattr(s.engine, "write_log", lambda rows: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O")))
    with pytest.raises(Exception, match="disk I/O"):
        s.apply([msg(1, wire.tabulate(rows_b))], [])
    monkeypatch.setattr(s.engine, "write_log", real)
    s.apply([msg(2, wire.tabulate(rows_c))], [])
    s.apply([msg(3, wire.tabulate(rows_b))], [])
    s.seal(T0 + 5 * HOUR)
    s.close()
    got = sorted((x["d"], x["tags"]["ifIndex"], x["f"]["v"]) for x in stored_samples(str(tmp_path / "b.db")))
    assert got == sorted((r["d"], r["tags"]["ifIndex"], r["f"]["v"]) for r in rows_b + rows_c)
