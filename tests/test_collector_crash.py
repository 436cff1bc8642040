"""SIGKILL the collector mid-ingest, restart it: every seq stored exactly once, nothing lost."""
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx

from campus_sense import wire
from collector.store.sqlite import stored_samples
from tests.collector_util import Publisher, wait_until, write_config
from tests.peers import free_port

N = 300          # messages (seq 1..N)
K = 40           # samples per message


def _start(cfg, log):
    return subprocess.Popen([sys.executable, "-m", "campus_sense", "collector", "--config", str(cfg)],
                            stdout=log, stderr=subprocess.STDOUT)


def _count(db, sql):
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = c.execute(sql).fetchone()
            return (row[0] or 0) if row else 0
        finally:
            c.close()
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_ingest_no_loss_no_dup(tmp_path, mosquitto, mqtt_users):
    db = tmp_path / "c.db"
    api_port = free_port()
    cfg = write_config(tmp_path / "collector.yaml", mosquitto.port, "collector", mqtt_users["collector"], db,
                       api_port, extra="ingest: {batch_messages: 20, batch_ms: 20}\n")
    log = open(tmp_path / "collector.log", "ab")
    proc = _start(cfg, log)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health").json()["ingest"]["connected"]
                   if _up(api_port) else False, 30, "collector connected")
        pub = Publisher(mosquitto.port, "agent-a", mqtt_users["agent-a"])
        killed = threading.Event()
        t0 = int(time.time() * 1000) - 3600_000

        def publish():
            for seq in range(1, N + 1):
                if seq == N // 2 + 1:
                    killed.wait(60)            # second half goes to the broker while the collector is dead
                items = [wire.sample("interface", f"sw{j % 4}", t0 + seq, {"n": seq * 1000 + j, "in_bps": 1.5},
                                     {"ifIndex": str(j)}) for j in range(K)]
                pub.durable("metrics", seq, items, wait=False)
                time.sleep(0.002)
        th = threading.Thread(target=publish)
        th.start()
        wait_until(lambda: _count(db, "SELECT value FROM counters WHERE name='messages_stored'") >= N // 6,
                   60, "some messages stored")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stored_at_kill = len(stored_samples(str(db)))
        killed.set()
        th.join(60)
        assert stored_at_kill < N * K
        proc = _start(cfg, log)
        wait_until(lambda: len(stored_samples(str(db))) >= N * K, 120, "all samples stored")
        wait_until(lambda: _count(db, "SELECT count(*) FROM seq_state WHERE hwm = %d" % N) == 1, 30)
        time.sleep(0.5)  # let any redelivered duplicate arrive (it must be dropped)
        got = [s["f"]["n"] for s in stored_samples(str(db))]
        assert len(got) == N * K and len(set(got)) == N * K
        assert _count(db, "SELECT value FROM counters WHERE name = 'same_time_merged'") in (None, 0)
        assert _count(db, "SELECT count(*) FROM gaps") == 0
        assert min(got) == 1000 and max(got) == N * 1000 + K - 1
        # the running server answers with a token made by the CLI
        tok = subprocess.run([sys.executable, "-m", "campus_sense", "collector", "token", "create", "--role", "it",
                              "--config", str(cfg)], capture_output=True, text=True, check=True).stdout.strip()
        base = f"http://127.0.0.1:{api_port}/api/v1"
        assert httpx.get(f"{base}/agents").status_code == 401
        agents = httpx.get(f"{base}/agents", headers={"Authorization": f"Bearer {tok}"}).json()
        assert agents[0]["id"] == "agent-a" and agents[0]["gaps"] == [] and agents[0]["epochs"][0]["hwm"] == N
        stats = httpx.get(f"{base}/ingest/stats", headers={"Authorization": f"Bearer {tok}"}).json()
        assert stats["counters"]["points_stored"] >= N * K
        pub.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert "Traceback" not in (tmp_path / "collector.log").read_text()


def _up(port):
    try:
        httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
        return True
    except httpx.HTTPError:
        return False


def test_session_survives_collector_and_broker_restart(tmp_path, mosquitto, mqtt_users):
    """Messages published while the collector is down, across a broker restart, are delivered."""
    from collector.config import MQTT
    from collector.ingest import Ingest
    from collector.store.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "c.db"))
    cfg = MQTT(host="127.0.0.1", port=mosquitto.port, username="collector", password=mqtt_users["collector"],
               client_id="collector-restart")
    ing = Ingest(cfg, store).start()
    assert ing.connected.wait(10)
    ing.stop()
    pub = Publisher(mosquitto.port, "agent-a", mqtt_users["agent-a"])
    for seq in range(1, 51):
        pub.durable("metrics", seq, [wire.sample("m", "d1", 1_795_000_000_000 + seq, {"n": seq})])
    pub.close()
    mosquitto.stop()
    mosquitto.start()
    ing = Ingest(cfg, store).start()
    try:
        wait_until(lambda: store.counters.get("messages_stored", 0) >= 50, 30, "50 queued messages")
        assert len(stored_samples(store.path)) == 50
        assert store.ingest_stats()["gaps"] == []
    finally:
        ing.stop()
        store.close()
