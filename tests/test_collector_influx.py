"""InfluxDB v2 sink against a real victoria-metrics (InfluxDB line-protocol write API)."""
import time

import pytest
from fastapi.testclient import TestClient

from campus_sense import wire
from collector.api import create_app
from collector.config import MQTT, Ingest as IngestCfg
from collector.ingest import Ingest
from collector.store.influx import InfluxSink, to_line
from collector.store.sqlite import SQLiteStore
from tests.collector_util import Publisher, iface, wait_until
from tests.peers_vm import VictoriaMetrics


@pytest.fixture
def vm(tmp_path):
    v = VictoriaMetrics(tmp_path / "vm").start()
    yield v
    v.stop()


def _by_metric(rows):
    return {(r["metric"]["__name__"], r["metric"].get("device"), r["metric"].get("ifName")):
            list(zip(r["timestamps"], r["values"])) for r in rows}


def test_line_protocol_escaping():
    it = wire.sample("if stats", "sw 1,a", 5, {"x": 1, "y": 2.5, "ok": True, "s": 'a "q"', "n": None},
                     {"ifName": "Gi0/1 x=y"})
    assert to_line(it) == 'if\\ stats,device=sw\\ 1\\,a,ifName=Gi0/1\\ x\\=y x=1i,y=2.5,ok=true,s="a \\"q\\"" 5'


def test_line_carries_topic_origin_over_sample_tags():
    it = wire.sample("interface", "sw1", 5, {"x": 1}, {"ifName": "Gi0/1", "building": "spoofed"})
    assert to_line(it, ("north", "B 2", "ag-b")) == \
        "interface,device=sw1,agent=ag-b,building=B\\ 2,ifName=Gi0/1,site=north x=1i 5"


def test_sink_write_read_back(vm):
    sink = InfluxSink(vm.url, "", "campus", "campus")
    assert sink.ping()
    t0 = int(time.time() * 1000) - 3600_000
    items = [iface("sw1", t0 + k * 60_000, i, in_bps=float(i * 100 + k)) for k in range(3) for i in (1, 2)]
    sink.write(items)
    got = _by_metric(vm.export('{__name__="interface_in_bps"}'))
    assert got[("interface_in_bps", "sw1", "Gi0/1")] == [(t0 + k * 60_000, 100.0 + k) for k in range(3)]
    assert got[("interface_in_bps", "sw1", "Gi0/2")] == [(t0 + k * 60_000, 200.0 + k) for k in range(3)]
    speed = _by_metric(vm.export('{__name__="interface_speed_mbps"}'))
    assert speed[("interface_speed_mbps", "sw1", "Gi0/1")][0] == (t0, 1000.0)
    sink.close()


def test_ingest_to_influx_metadata_in_sqlite(tmp_path, vm, mosquitto, mqtt_users):
    store = SQLiteStore(str(tmp_path / "c.db"), sink=InfluxSink(vm.url, "", "campus", "campus"))
    ing = Ingest(MQTT(host="127.0.0.1", port=mosquitto.port, username="collector",
                      password=mqtt_users["collector"], client_id="collector-influx"), store,
                 IngestCfg(batch_ms=5)).start()
    pub = Publisher(mosquitto.port, "agent-a", mqtt_users["agent-a"])
    try:
        assert ing.connected.wait(10)
        t0 = int(time.time() * 1000) - 600_000
        for seq in range(1, 6):
            pub.durable("metrics", seq, [iface("sw9", t0 + seq * 1000, i, in_bps=float(seq * 10 + i))
                                         for i in range(1, 4)])
        pub.durable("metrics", 3, [iface("sw9", t0 + 3000, 1, in_bps=-1.0)])   # duplicate: not written
        wait_until(lambda: store.counters.get("messages_stored", 0) >= 5 and store.counters.get("duplicates", 0))
        got = _by_metric(vm.export('{__name__="interface_in_bps",device="sw9"}'))
        assert got[("interface_in_bps", "sw9", "Gi0/1")] == [(t0 + s * 1000, float(s * 10 + 1)) for s in range(1, 6)]
        assert len(got) == 3
        # the topic's site/building/agent become tags: the Grafana dashboards filter by building
        rows = vm.export('{__name__="interface_in_bps",device="sw9"}')
        assert {(r["metric"].get("site"), r["metric"].get("building"), r["metric"].get("agent")) for r in rows} == \
            {("north", "A", "agent-a")}
        assert store.engine is None and store.reader().execute("SELECT count(*) FROM sqlite_master WHERE name IN ('chunks', 'head_log')").fetchone()[0] == 0
        _, tok = store.token_create("it")
        c = TestClient(create_app(store, ing))
        c.headers["Authorization"] = f"Bearer {tok}"
        ifs = c.get("/api/v1/devices/sw9/interfaces").json()          # latest values still from SQLite
        assert [i["in_bps"] for i in ifs] == [51.0, 52.0, 53.0]
        r = c.get("/api/v1/series", params={"measurement": "interface"})
        assert r.status_code == 501 and "influxdb" in r.json()["detail"]
    finally:
        pub.close()
        ing.stop()
        store.close()


class _SlowWriteServer:
    """An InfluxDB v2 write endpoint that holds every request until released and counts how many it
    held at once (the sink's parallelism, without timing anything)."""

    def __init__(self):
        import http.server
        import threading
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.inflight = self.max_inflight = self.bodies = 0
        srv = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with srv.lock:
                    srv.inflight += 1
                    srv.max_inflight = max(srv.max_inflight, srv.inflight)
                srv.release.wait(10)
                with srv.lock:
                    srv.inflight -= 1
                    srv.bodies += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.mark.parametrize("writers", [1, 4])
def test_partitions_of_one_collector_write_in_parallel(writers):
    """Each partition's commit waits for its own write; with ``store.writers`` > 1 they are sent at once
    instead of queueing behind one another (one slow write no longer holds every partition)."""
    srv = _SlowWriteServer()
    sink = InfluxSink(srv.url, "", "campus", "campus", writers=writers)
    try:
        handles = [sink.write_begin([(("s", "b", f"ag{i}"), [wire.sample("interface", f"sw{i}", 1000 + i, {"x": i})])])
                   for i in range(4)]
        wait_until(lambda: srv.inflight == min(writers, 4), 10, f"{min(writers, 4)} writes held by the server")
        srv.release.set()
        for h in handles:
            sink.write_end(h)
        assert srv.bodies == 4 and sink.written == 4
        assert srv.max_inflight == min(writers, 4)
    finally:
        srv.release.set()
        sink.close()
        srv.httpd.shutdown()
