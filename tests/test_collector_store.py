"""SQLite store unit behaviour: seq/gap bookkeeping, retention, rollback, queries."""
import time

import pytest

from campus_sense import wire
from collector.store.base import Reject, StorageUnavailable, TimeSeriesSink
from collector.store.sqlite import SQLiteStore, _SeqState
from tests.collector_util import iface

T0 = 1_795_000_000_000  # 2026-11-18, a multiple of the 5 s step used below


def msg(seq, items, kind="metrics", agent="a1", epoch="e1"):
    payload = wire.encode_durable(kind, agent, epoch, seq, 0, [wire.encode_item(i) for i in items])
    return wire.decode(wire.topic("s", "b", agent, kind), payload)


def test_seq_state_gaps():
    st = _SeqState(0, [], None)
    assert [st.accept(s) for s in (1, 2, 2, 7, 1)] == [True, True, False, True, False]
    assert st.gaps == [[3, 6]]
    assert st.accept(5) and st.gaps == [[3, 4], [6, 6]]
    assert st.accept(3) and st.gaps == [[4, 4], [6, 6]]
    assert st.accept(6) and st.accept(4) and st.gaps == []
    assert not st.accept(4) and st.hwm == 7


def test_gaps_persist_across_restart(tmp_path):
    db = str(tmp_path / "c.db")
    s = SQLiteStore(db)
    s.apply([msg(1, [iface("sw", T0 + 1, 1)]), msg(4, [iface("sw", T0 + 4, 1)])], [])
    s.close()
    s = SQLiteStore(db)
    r = s.apply([msg(4, [iface("sw", T0 + 4, 1)]), msg(2, [iface("sw", T0 + 2, 1)])], [])
    assert r.duplicates == 1 and len(r.accepted) == 1
    assert [(g["first_seq"], g["last_seq"]) for g in s.ingest_stats()["gaps"]] == [(3, 3)]
    s.close()


class Boom(TimeSeriesSink):
    def __init__(self):
        self.fail = True
        self.got = []

    def write(self, samples):
        if self.fail:
            raise ConnectionError("influx down")
        self.got.extend(samples)


def test_sink_failure_rolls_back_everything(tmp_path):
    sink = Boom()
    s = SQLiteStore(str(tmp_path / "c.db"), sink=sink)
    m = msg(1, [iface("sw", T0 + 1, 1)])
    with pytest.raises(StorageUnavailable):
        s.apply([m], [Reject("t", "bad_json", "x")])
    assert s.reader().execute("SELECT count(*) FROM seq_state").fetchone()[0] == 0
    assert s.ingest_stats()["rejected_total"] == 0 and s.devices() == []
    sink.fail = False
    r = s.apply([m], [Reject("t", "bad_json", "x")])   # redelivery after the failure is not a duplicate
    assert len(r.accepted) == 1 and len(sink.got) == 1
    assert s.ingest_stats()["rejected_total"] == 1
    assert s.interfaces("sw")[0]["in_bps"] == 1000.0
    s.close()


def test_retention_deletes_old_events(tmp_path):
    s = SQLiteStore(str(tmp_path / "c.db"), events_days=1)
    now = int(time.time() * 1000)
    s.apply([msg(3, [wire.event("d", "x", now - 2 * 86400_000), wire.event("d", "y", now)], kind="events")], [])
    assert s.retention(now) == {"events": 1}
    assert s.retention(now) == {}
    assert [e["type"] for e in s.events(None, None, None, None, None, 10)] == ["y"]
    s.close()


def test_series_queries_and_events(tmp_path):
    s = SQLiteStore(str(tmp_path / "c.db"))
    items = [wire.sample("env", "room1", T0 + t, {"temp": float(t), "hum": 50, "door": (t // 1000) % 2 == 0,
                                                   "txt": "x"}) for t in range(0, 10_000, 1000)]
    ev = [wire.event("door-1", "door_forced", T0 + 5, "critical"), wire.event("door-2", "tamper", T0 + 6, "warning")]
    s.apply([msg(1, items), msg(2, ev, kind="events")], [])
    r = s.series("env", "room1", "temp", T0 + 2000, T0 + 6000, None, None, 100)
    assert r[0]["points"] == [[T0 + 2000, 2000.0], [T0 + 3000, 3000.0], [T0 + 4000, 4000.0], [T0 + 5000, 5000.0]]
    r = s.series("env", None, "temp", None, None, 5000, None, 100)
    assert r[0]["points"] == [[T0, 2000.0], [T0 + 5000, 7000.0]]
    r = s.series("env", None, None, None, None, 5000, None, 100)
    assert r[0]["points"][0] == [T0, {"temp": 2000.0, "hum": 50.0, "door": 0.6}]
    r = s.series("env", None, None, None, None, None, None, 3)
    assert len(r[0]["points"]) == 3 and r[0]["truncated"] and r[0]["points"][0][1]["txt"] == "x"
    assert s.series("env", "nope", None, None, None, None, None, 10) == []
    assert [e["type"] for e in s.events(None, None, None, None, None, 10)] == ["tamper", "door_forced"]
    assert [e["device"] for e in s.events(None, None, None, "critical", None, 10)] == ["door-1"]
    assert s.events("door-2", T0, T0 + 6, None, None, 10) == []
    s.close()
