"""Two collector processes on one PostgreSQL (store.kind postgres, partitions), real Mosquitto,
VictoriaMetrics and a webhook peer: an alert fires where its site's partition runs, is acknowledged
through the OTHER collector's API and is seen acknowledged through both; its notification is sent
exactly once (outbox shared in PostgreSQL, sending only where the ``notify`` singleton lease is held);
the audit log is one valid chain."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from campus_sense import wire
from collector.partitions import partition_name, partition_of
from tests import peers_pg
from tests.collector_util import Publisher, wait_until
from tests.peers import free_port
from tests.test_notify_support import RobotServer
from tests.test_store_postgres import _count, _up, _vm, collector_config

pytestmark = pytest.mark.skipif(not peers_pg.available(), reason="PostgreSQL/psycopg missing")

COUNT = 2
RULES = """\
rules:
  - name: door-forced
    kind: event
    event: door_forced
    severity: critical
    summary: "Door forced: {device}"
"""


@pytest.fixture(scope="module")
def pg():
    p = peers_pg.Postgres().start()
    yield p
    p.cleanup()


def _holder(dsn: str, lease: str) -> str | None:
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as c:
        r = c.execute("SELECT holder FROM leases WHERE name=%s AND expires_at > now()", (lease,)).fetchone()
    return r[0].split(":")[0] if r else None


def test_two_collectors_share_alerts_and_send_once(tmp_path, pg, mosquitto, mqtt_users):
    from collector.store.postgres import PostgresStore
    dsn = pg.create_db("t_district_alerts")
    vm = _vm().start()
    hook = RobotServer().start()
    st = PostgresStore(dsn)                     # tokens live in PostgreSQL: both collectors know them
    token = st.token_create("security", "sec-user")[1]
    st.close()
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "notify.yaml").write_text(
        f"channels:\n  hook: {{type: webhook, url: '{hook.url('/hook/district')}'}}\n"
        "route: {channels: [hook], group_wait: 0s, group_interval: 0s}\n"
        "outbox: {evaluation_interval: 0.2s}\n")
    extra = (f"partitions: {{count: {COUNT}, lease_s: 3, refresh_s: 1, sites: [north]}}\n"
             f"rules: {{paths: [{tmp_path / 'rules.yaml'}], db: unused-alerts.db, tick_s: 0.2}}\n"
             f"notify: {{config: {tmp_path / 'notify.yaml'}}}\n")
    ports = {n: free_port() for n in ("c1", "c2")}
    procs: dict[str, subprocess.Popen] = {}
    pub = None
    try:
        for n, port in ports.items():
            p = collector_config(tmp_path / f"{n}.yaml", mosquitto, mqtt_users["collector"], dsn, vm.url, port,
                                 client_id="district", extra=extra)
            p.write_text(p.read_text().replace("  kind: postgres\n", f"  kind: postgres\n  node: {n}\n"))
            procs[n] = subprocess.Popen([sys.executable, "-m", "campus_sense", "collector", "--config", str(p)],
                                        stdout=open(tmp_path / f"{n}.log", "ab"), stderr=subprocess.STDOUT)
        lease = f"partition/{partition_name(partition_of('north', COUNT), COUNT)}"
        wait_until(lambda: _holder(dsn, lease) in ports, 60, "north's partition taken")
        wait_until(lambda: all(_up(p) for p in ports.values()), 60, "both collectors up")
        owner = _holder(dsn, lease)
        other = next(n for n in ports if n != owner)
        api = {n: httpx.Client(base_url=f"http://127.0.0.1:{p}/api/v1", timeout=10,
                               headers={"Authorization": f"Bearer {token}"}) for n, p in ports.items()}

        pub = Publisher(mosquitto.port, "agent-a", mqtt_users["agent-a"], agent="agent-a", site="north")
        pub.state("birth", version="test", config_hash="x", drivers=["test"],
                  devices=[{"id": "door-1", "driver": "test", "room": "A-101", "type": "door"}])
        pub.durable("events", 1, [wire.event("door-1", "door_forced", int(time.time() * 1000), "critical")])

        def alert_on(n):
            r = api[n].get("/alerts", params={"rule": "door-forced"})
            return r.json()[0] if r.status_code == 200 and r.json() else None
        a = wait_until(lambda: alert_on(owner), 30, "alert fired where north runs")
        assert alert_on(other)["id"] == a["id"]                  # the other collector sees the same alert

        # acknowledged through the collector that does not run the site's rules ...
        r = api[other].post(f"/alerts/{a['id']}/ack", json={"comment": "on it"})
        assert r.status_code == 200, r.text
        # ... is acknowledged through both
        for n in ports:
            got = api[n].get(f"/alerts/{a['id']}").json()
            assert got["acked_by"] == "sec-user (security)" and got["ack_comment"] == "on it"
            assert [h["action"] for h in got["history"]] == ["firing", "acked"]

        # one notification, from whichever collector holds the sending lease
        wait_until(lambda: hook.accepted_on("/hook/district"), 30, "notification delivered")
        time.sleep(3)                           # both notifiers evaluate every 0.2 s: nothing more comes
        sent = hook.accepted_on("/hook/district")
        assert len(sent) == 1, sent
        assert [x["id"] for x in sent[0]["body"]["alerts"]] == [str(a["id"])]
        assert _count(dsn, "SELECT count(*) FROM notify_outbox") == 1
        assert _count(dsn, "SELECT count(*) FROM notify_outbox WHERE state='sent'") == 1
        assert _holder(dsn, "singleton/notify") in ports
        # the audit log: one chain for both collectors, the ack in it
        assert _count(dsn, "SELECT count(*) FROM audit_log WHERE action LIKE '%ack%'") == 1
        for c in api.values():
            c.close()
    finally:
        if pub is not None:
            pub.close()
        for n, p in procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        hook.stop()
        vm.stop()
    for n in ports:
        log = (tmp_path / f"{n}.log").read_text()
        assert "Traceback" not in log, log[-3000:]
