"""Rule state follows a partition across a kill -9 (collector/README.md "District scale"): two
collector processes on one PostgreSQL (real Mosquitto, VictoriaMetrics). The collector running site
north has a pending ``for: 12s`` alert when it is killed (kill -9: the lease runs out) or stopped
(SIGTERM: graceful hand-over, lease released); the survivor takes the partition over,
loads the pending alert and fires it once, at its original start + 12 s. The agent keeps publishing
throughout: no agent_offline, neither from the take-over nor from the gap."""
from __future__ import annotations

import signal
import subprocess
import threading
import time

import psycopg
import pytest

from campus_sense import wire
from collector.partitions import partition_name, partition_of
from tests import peers_pg
from tests.collector_util import Publisher, wait_until
from tests.test_store_postgres import _up, _vm, lease_holder, start_district

pytestmark = pytest.mark.skipif(not peers_pg.available(), reason="PostgreSQL/psycopg missing")

COUNT = 2
RULES = """\
rules:
  - {name: hot, kind: threshold, measurement: env, field: temp, value: 30, for: 12s}
  - {name: agent-offline, kind: agent_offline, after: 6s}
"""


def _rows(dsn, sql, args=()):
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
        try:
            return c.execute(sql, args).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


@pytest.mark.parametrize("how", ["kill", "term"])
def test_owner_gone_pending_for_fires_once_on_time(tmp_path, pg, mosquitto, mqtt_users, how):
    dsn = pg.create_db(f"t_district_handover_{how}")
    vm = _vm().start()
    (tmp_path / "rules.yaml").write_text(RULES)
    extra = (f"partitions: {{count: {COUNT}, lease_s: 2, refresh_s: 1, sites: [north]}}\n"
             f"rules: {{paths: [{tmp_path / 'rules.yaml'}], db: unused-alerts.db, tick_s: 0.2}}\n")
    procs: dict[str, subprocess.Popen] = {}
    pub, stop, feeder = None, threading.Event(), None
    try:
        ports, procs = start_district(tmp_path, ("c1", "c2"), mosquitto, mqtt_users["collector"], dsn, vm.url, extra)
        lease = f"partition/{partition_name(partition_of('north', COUNT), COUNT)}"
        wait_until(lambda: lease_holder(dsn, lease) in ports, 30, "north's partition taken")
        wait_until(lambda: all(_up(p) for p in ports.values()), 30, "both collectors up")
        owner = lease_holder(dsn, lease)
        survivor = next(n for n in ports if n != owner)

        pub = Publisher(mosquitto.port, "agent-a", mqtt_users["agent-a"], agent="agent-a", site="north")
        pub.state("birth", version="test", config_hash="x", drivers=["test"],
                  devices=[{"id": "probe-1", "driver": "test", "room": "A-101", "type": "sensor"}])

        def feed():         # the agent keeps publishing: a hot sample and a heartbeat every 0.3 s
            seq = 0
            while not stop.is_set():
                seq += 1
                now = int(time.time() * 1000)
                pub.durable("metrics", seq, [wire.sample("env", "probe-1", now, {"temp": 35.0})], wait=False)
                pub.state("heartbeat")
                stop.wait(0.3)
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()

        pending = wait_until(lambda: _rows(dsn, "SELECT id, started_ms FROM alerts WHERE rule='hot' "
                                                "AND state='pending'"), 20, "pending alert where north runs")
        aid, started = pending[0]
        assert lease_holder(dsn, lease) == owner
        procs[owner].send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        procs[owner].wait(20)
        killed_ms = int(time.time() * 1000)
        assert killed_ms < started + 12_000

        wait_until(lambda: lease_holder(dsn, lease) == survivor, 15, "survivor took north's partition")
        fired = wait_until(lambda: _rows(dsn, "SELECT fired_ms FROM alerts WHERE id=%s AND state='firing'",
                                         (aid,)), 25, "the pending alert fired on the survivor")
        assert fired[0][0] == started + 12_000                # the original start + for, not restarted
        # past take-over (<= 2.7 s) + grace (2 x lease_s) + after: an agent_offline would have fired by now
        time.sleep(max(0.0, (killed_ms + 14_000 - time.time() * 1000) / 1000))
        assert _rows(dsn, "SELECT id, state FROM alerts WHERE rule='hot'") == [(aid, "firing")]
        assert [a for (a,) in _rows(dsn, "SELECT action FROM alert_history WHERE alert_id=%s ORDER BY id",
                                    (aid,))] == ["pending", "firing"]
        assert _rows(dsn, "SELECT id, state FROM alerts WHERE rule='agent-offline'") == []
        site = _rows(dsn, "SELECT site FROM alert_liveness WHERE kind='agent' AND key='agent-a'")
        assert site == [("north",)]                         # last-seen rows carry the site
    finally:
        stop.set()
        if feeder is not None:
            feeder.join(5)
        if pub is not None:
            pub.close()
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        vm.stop()
    for n in ports if how == "term" else [survivor]:
        log = (tmp_path / f"{n}.log").read_text()
        assert "Traceback" not in log, log[-3000:]
