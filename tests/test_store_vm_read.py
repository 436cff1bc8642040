"""/series from VictoriaMetrics (store.query_url) answers like the embedded store for the same data."""
import pytest
from fastapi.testclient import TestClient

from collector.api import create_app
from collector.store.influx import InfluxSink
from collector.store.promql import PromReader
from collector.store.series import DAY, HOUR
from collector.store.sqlite import SQLiteStore
from tests.peers_vm import VM_BIN, VictoriaMetrics
from tests.test_store_series import MIN, T0, feed, switch_polls

pytestmark = pytest.mark.skipif(not __import__("pathlib").Path(VM_BIN).exists(), reason="victoria-metrics missing")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vmread")
    vm = VictoriaMetrics(tmp / "vm").start()
    polls = switch_polls(6 * 60)
    emb = SQLiteStore(str(tmp / "emb.db"), synchronous="NORMAL")
    sink = InfluxSink(vm.url, "", "campus", "campus")
    sink.reader = PromReader(vm.url)
    ext = SQLiteStore(str(tmp / "ext.db"), sink=sink, synchronous="NORMAL")
    feed(emb, polls)
    feed(ext, polls)
    vm.flush()
    yield emb, ext, polls
    emb.close()
    ext.close()
    vm.stop()


def q(store, field, step, agg, port=1, start=T0, end=T0 + 6 * HOUR):
    r = store.series("interface", "sw", field, start, end, step, {"ifIndex": str(port)}, 100_000, agg)
    return r[0]["points"] if r else []


def test_raw_points_are_the_same(pair):
    emb, ext, _ = pair
    a, b = q(emb, "in_bps", None, "avg"), q(ext, "in_bps", None, "avg")
    assert len(a) == 360 and [p[0] for p in a] == [p[0] for p in b]
    assert all(x[1] == pytest.approx(y[1], rel=1e-12) for x, y in zip(a, b))
    up = q(ext, "oper_up", None, "avg", start=T0, end=T0 + HOUR)
    assert {p[1] for p in up} <= {0.0, 1.0} and len(up) == 60        # booleans arrive as 0/1
    allf = ext.series("interface", "sw", None, T0, T0 + 2 * MIN, None, {"ifIndex": "2"}, 10, "avg")
    assert set(allf[0]["points"][0][1]) >= {"in_octets", "in_bps", "oper_up", "counter_bits", "in_errors"}


@pytest.mark.parametrize("agg", ["avg", "min", "max", "last", "count", "sum"])
def test_buckets_cover_the_same_samples(pair, agg):
    emb, ext, _ = pair
    for step in (5 * MIN, HOUR):
        a, b = q(emb, "in_bps", step, agg), q(ext, "in_bps", step, agg)
        assert len(a) == 6 * HOUR // step and [p[0] for p in a] == [p[0] for p in b], (agg, step)
        assert all(x[1] == pytest.approx(y[1], rel=1e-6) for x, y in zip(a, b)), (agg, step)


def test_counter_rate_close_and_not_a_counter_refused(pair):
    emb, ext, _ = pair
    a, b = q(emb, "in_octets", HOUR, "rate"), q(ext, "in_octets", HOUR, "rate")
    assert len(a) == 6 and [p[0] for p in a][1:] == [p[0] for p in b][1:]
    for x, y in list(zip(a, b))[1:]:
        assert y[1] == pytest.approx(x[1], rel=0.05)
    with pytest.raises(ValueError, match="not a counter"):
        ext.series("interface", "sw", "in_bps", T0, T0 + DAY, HOUR, None, 10, "rate")


def test_api_series_from_vm_and_503_when_down(pair, tmp_path):
    _, ext, _ = pair
    _, tok = ext.token_create("it")
    c = TestClient(create_app(ext, None))
    h = {"Authorization": f"Bearer {tok}"}
    r = c.get("/api/v1/series", params={"measurement": "interface", "device": "sw", "field": "in_bps",
                                        "start": T0, "end": T0 + HOUR, "step": 300_000, "tags": "ifIndex=1"}, headers=h)
    assert r.status_code == 200 and len(r.json()["series"][0]["points"]) == 12, r.text
    sink = InfluxSink("http://127.0.0.1:9", "", "campus", "campus")
    sink.reader = PromReader("http://127.0.0.1:9", timeout_s=2)
    down = SQLiteStore(str(tmp_path / "d.db"), sink=sink)
    _, tok2 = down.token_create("it")
    r = TestClient(create_app(down, None)).get("/api/v1/series", params={"measurement": "interface"},
                                              headers={"Authorization": f"Bearer {tok2}"})
    assert r.status_code == 503 and "127.0.0.1:9" in r.json()["detail"]
    down.close()
