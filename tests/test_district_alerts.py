"""Two collector processes on one PostgreSQL (store.kind postgres, partitions), real Mosquitto,
VictoriaMetrics and a webhook peer: an alert fires where its site's partition runs, is acknowledged
through the OTHER collector's API and is seen acknowledged through both; the live stream (SSE) of
EACH collector carries the firing and the ack once; its notification is sent exactly once (outbox
shared in PostgreSQL, sending only where the ``notify`` singleton lease is held); the audit log is
one valid chain."""
from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import httpx
import pytest

from campus_sense import wire
from collector.partitions import partition_name, partition_of
from tests import peers_pg
from tests.collector_util import Publisher, wait_until
from tests.test_notify_support import RobotServer
from tests.test_store_postgres import _count, _up, _vm, lease_holder, start_district

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
    procs: dict[str, subprocess.Popen] = {}
    pub = None
    try:
        ports, procs = start_district(tmp_path, ("c1", "c2"), mosquitto, mqtt_users["collector"], dsn, vm.url, extra)
        lease = f"partition/{partition_name(partition_of('north', COUNT), COUNT)}"
        wait_until(lambda: lease_holder(dsn, lease) in ports, 60, "north's partition taken")
        wait_until(lambda: all(_up(p) for p in ports.values()), 60, "both collectors up")
        owner = lease_holder(dsn, lease)
        other = next(n for n in ports if n != owner)
        api = {n: httpx.Client(base_url=f"http://127.0.0.1:{p}/api/v1", timeout=10,
                               headers={"Authorization": f"Bearer {token}"}) for n, p in ports.items()}

        # the live stream of both API nodes, from before the alert fires
        streams: dict[str, list] = {n: [] for n in ports}
        hello = {n: threading.Event() for n in ports}

        def listen(n):
            try:
                with httpx.stream("GET", f"http://127.0.0.1:{ports[n]}/api/v1/alerts/stream",
                                  params={"token": token}, timeout=httpx.Timeout(10, read=None)) as r:
                    for line in r.iter_lines():
                        if line.startswith("event: hello"):
                            hello[n].set()
                        elif line.startswith("data:") and hello[n].is_set():
                            d = json.loads(line[5:])
                            if d.get("alert"):
                                streams[n].append((d["kind"], d["alert"]["id"]))
            except httpx.HTTPError:
                pass                                # the collector stopped
        for n in ports:
            threading.Thread(target=listen, args=(n,), daemon=True).start()
            assert hello[n].wait(15), f"{n}: stream connected"

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
        # the live stream of EACH node: the firing (made where north runs) and the ack (made through
        # the other node), once each, in order
        for n in ports:
            wait_until(lambda n=n: len(streams[n]) >= 2, 15, f"{n}'s stream has the firing and the ack")
        time.sleep(1.5)                         # a poll later: nothing twice
        for n in ports:
            assert streams[n] == [("firing", a["id"]), ("acked", a["id"])], (n, streams[n])

        # one notification, from whichever collector holds the sending lease
        wait_until(lambda: hook.accepted_on("/hook/district"), 30, "notification delivered")
        time.sleep(3)                           # both notifiers evaluate every 0.2 s: nothing more comes
        sent = hook.accepted_on("/hook/district")
        assert len(sent) == 1, sent
        assert [x["id"] for x in sent[0]["body"]["alerts"]] == [str(a["id"])]
        assert _count(dsn, "SELECT count(*) FROM notify_outbox") == 1
        assert _count(dsn, "SELECT count(*) FROM notify_outbox WHERE state='sent'") == 1
        assert lease_holder(dsn, "singleton/notify") in ports
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


def test_shared_feed_follows_history_in_order_across_late_commits(pg):
    """The live stream on a shared PostgreSQL: history ids come from a sequence, so a lower id can
    commit after a higher one was read. The feed waits for it (published once, late, not skipped)
    and gives up on an id that never commits (a rolled-back transaction) after gap_s."""
    import psycopg

    from collector.alertcore.hub import SharedFeed
    from collector.store.alerts import AlertStore
    from collector.store.sqldb import Pg
    dsn = pg.create_db("t_shared_feed")
    writer, reader = AlertStore(Pg(dsn)), AlertStore(Pg(dsn))      # two collectors

    class Hub:
        def __init__(self):
            self.got = []

        def publish(self, change):
            self.got.append((change.kind, change.alert.id, change.t_ms))
    hub = Hub()
    feed = SharedFeed(reader, hub, gap_s=30)
    a, _ = writer.open_alert(fingerprint="f1", rule="r", kind="event", subject={"id": "d"}, state="firing",
                             severity="critical", labels={}, summary="s", value=None, t_ms=1000)
    b, _ = writer.open_alert(fingerprint="f2", rule="r", kind="event", subject={"id": "e"}, state="firing",
                             severity="warning", labels={}, summary="s", value=None, t_ms=1000)
    feed.low = reader.last_history_id()                  # started now: older history is not replayed
    assert feed.poll(now=0) == 0
    with psycopg.connect(dsn) as slow:                   # a transaction holding the next id, uncommitted
        slow.execute("INSERT INTO alert_history(alert_id, t_ms, action, actor, detail) VALUES (%s, 2000, "
                     "'commented', 'x', '{}')", (b.id,))
        writer.update(a.id, 3000, "acked", "sec", {"comment": "ok"}, acked_by="sec", acked_ms=3000)
        assert feed.poll(now=1) == 1 and hub.got == [("acked", a.id, 3000)]
        assert feed.poll(now=2) == 0                     # nothing twice while the gap is open
        slow.commit()
    assert feed.poll(now=3) == 1 and hub.got[-1] == ("commented", b.id, 2000)   # late, not skipped
    with psycopg.connect(dsn) as lost:                   # an id consumed by a rolled-back transaction
        lost.execute("INSERT INTO alert_history(alert_id, t_ms, action, actor, detail) VALUES (%s, 4000, "
                     "'commented', 'y', '{}')", (a.id,))
        lost.rollback()
    writer.update(a.id, 5000, "commented", "sec", {"text": "z"})
    assert feed.poll(now=4) == 1 and feed.missing          # waits for the missing id ...
    low = feed.low
    feed.poll(now=4 + 31)                                  # ... then gives up on it
    assert feed.low > low and not feed.missing and not feed.done
    assert [k for k, *_ in hub.got] == ["acked", "commented", "commented"]
    writer.close()
    reader.close()
