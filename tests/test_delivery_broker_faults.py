"""Delivery under broker faults: real Mosquitto (shipped ACL, client id = user name), real agent
and collector processes. Every test counts what the agent produced against what the collector
stored: every seq 1..last of the agent's epoch stored exactly once, nothing lost.

Why these faults: the agent deletes a queued row only when the collector's commit watermark
covers it (campus_sense/wire.py), so a broker that PUBACKed and then lost a message (SIGKILL
between autosaves), an ACL that refuses a publish (MQTT 5 PUBACK reason code) and a client that
tries to wipe the collector's persistent session must all cost at most a replay, never data.
"""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from campus_sense import wire
from tests.collector_util import Publisher, wait_until, write_config
from tests.peers import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
CONFIRM_S = 5


# ------------------------------------------------------------------ peers
class Proc:
    def __init__(self, args: list[str], log: Path):
        self.log = log
        with open(log, "ab") as f:
            self.p = subprocess.Popen([PY, "-m", "campus_sense", *args], cwd=ROOT, stdout=f, stderr=f)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 40) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        return self.p.wait(timeout)


@pytest.fixture
def procs():
    started: list[Proc] = []

    def start(args: list[str], log: Path) -> Proc:
        started.append(Proc(args, log))
        return started[-1]
    yield start
    for p in started:
        if p.p.poll() is None:
            p.p.kill()
            p.p.wait()


class Collector:
    def __init__(self, tmp_path: Path, broker: Mosquitto, users: dict, start, client_id: str = "collector-test"):
        self.dir = tmp_path / "collector"
        self.dir.mkdir(exist_ok=True)
        self.db = self.dir / "c.db"
        self.api = free_port()
        self.client_id = client_id
        self.cfg = write_config(self.dir / "collector.yaml", broker.port, "collector", users["collector"], self.db,
                                self.api, extra="ingest: {batch_messages: 50, batch_ms: 20}\n", client_id=client_id)
        self._start = start
        self.proc: Proc | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api}/api/v1"

    def start(self) -> "Collector":
        self.proc = self._start(["collector", "--config", str(self.cfg)], self.dir / "collector.log")
        wait_until(lambda: self._connected(), 60, "collector connected and subscribed")
        return self

    def _connected(self) -> bool:
        assert self.proc.p.poll() is None, self.proc.text()[-3000:]
        try:
            return bool(httpx.get(f"{self.base}/health", timeout=2).json()["ingest"]["connected"])
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def kill(self) -> None:
        self.proc.stop(signal.SIGKILL, 10)

    def stop(self) -> int:
        return self.proc.stop(signal.SIGTERM, 30)

    def samples(self, device: str | None = None) -> list[dict]:
        from collector.store.sqlite import stored_samples
        return stored_samples(str(self.db), device=device) if self.db.exists() else []

    def q(self, sql: str, *args):
        if not self.db.exists():
            return []
        with closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)) as c:
            try:
                return c.execute(sql, args).fetchall()
            except sqlite3.OperationalError as e:
                if "no such table" in str(e):   # the collector is creating its schema
                    return []
                raise

    def hwm(self, agent: str, epoch: str | None = None) -> int:
        if epoch is None:
            r = self.q("SELECT max(hwm) FROM seq_state WHERE agent = ?", agent)
        else:
            r = self.q("SELECT hwm FROM seq_state WHERE agent = ? AND epoch = ?", agent, epoch)
        return (r[0][0] or 0) if r else 0

    def gaps(self, agent: str) -> list:
        return self.q("SELECT epoch, first_seq, last_seq FROM gaps WHERE agent = ?", agent)

    def counter(self, name: str) -> int:
        r = self.q("SELECT value FROM counters WHERE name = ?", name)
        return r[0][0] if r else 0

    def token(self, role: str = "admin") -> str:
        return subprocess.run([PY, "-m", "campus_sense", "collector", "token", "create", "--role", role,
                               "--config", str(self.cfg)], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()


def agent_config(tmp_path: Path, broker: Mosquitto, agent_id: str, user: str, password: str, device: str,
                 mqtt_extra: str = "", **publish) -> Path:
    d = tmp_path / agent_id
    d.mkdir(exist_ok=True)
    (d / "mqtt.pass").write_text(password + "\n")
    pub = {"batch_interval_s": 0.3, "reconnect_max_s": 1, "heartbeat_s": 2, "selfmetrics_s": 2,
           "shutdown_drain_s": 15, "confirm_timeout_s": CONFIRM_S, **publish}
    p = d / "agent.yaml"
    p.write_text(
        f"agent: {{id: {agent_id}, site: north, building: A}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: {user}, password_file: {d / 'mqtt.pass'},"
        f" keepalive_s: 5{', ' + mqtt_extra if mqtt_extra else ''}}}\n"
        f"queue: {{path: {d / 'queue.db'}, max_messages: 100000}}\n"
        f"publish: {{{', '.join(f'{k}: {v}' for k, v in pub.items())}}}\n"
        f"devices:\n  - {{id: {device}, driver: synthetic, interval_s: 0.5, options: {{interfaces: 3}}}}\n")
    return p


def start_agent(procs, cfg: Path) -> Proc:
    return procs(["agent", "--config", str(cfg)], cfg.parent / "agent.log")


def queue(cfg: Path) -> dict:
    """The agent's queue database: epoch, last seq, queued seqs, item counters."""
    try:
        db = sqlite3.connect(f"file:{cfg.parent / 'queue.db'}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:   # not created yet
        return {"epoch": None, "last": 0, "seqs": [], "produced": 0, "dropped": 0}
    with closing(db):
        try:
            meta = dict(db.execute("SELECT key, value FROM meta"))
        except sqlite3.OperationalError:   # being created
            meta = {}
        if "epoch" not in meta:            # schema created, meta row not yet committed
            return {"epoch": None, "last": 0, "seqs": [], "produced": 0, "dropped": 0}
        seqs = [r[0] for r in db.execute("SELECT seq FROM messages ORDER BY seq")]
    return {"epoch": meta["epoch"], "last": int(meta["next_seq"]) - 1, "seqs": seqs,
            "produced": int(meta.get("produced_total", 0)), "dropped": int(meta.get("dropped_total", 0))}


def queued_payloads(cfg: Path) -> list[tuple[int, str, bytes]]:
    with closing(sqlite3.connect(f"file:{cfg.parent / 'queue.db'}?mode=ro", uri=True, timeout=10)) as db:
        return list(db.execute("SELECT seq, kind, payload FROM messages ORDER BY seq"))


def assert_all_stored_once(col: Collector, agent: str, cfg: Path, devices: int = 1) -> dict:
    """After a clean agent stop: every seq 1..last of its epoch is stored (no gap), and the items the
    agent produced are the items the collector stored (a stored duplicate would add points)."""
    st = queue(cfg)
    epoch, last = st["epoch"], st["last"]
    wait_until(lambda: col.hwm(agent, epoch) == last, 60, f"collector hwm == {last} for {agent}")
    assert col.gaps(agent) == [], col.gaps(agent)
    # rows still queued are only ones the collector committed but whose watermark came after the stop
    assert all(s <= col.hwm(agent, epoch) for s in st["seqs"])
    assert [r[0] for r in col.q("SELECT epoch FROM seq_state WHERE agent = ?", agent)] == [epoch]
    # items: produced - dropped = stored points (metrics) + one facts item per device (first poll)
    assert st["dropped"] == 0
    devs = {r[0] for r in col.q("SELECT id FROM devices WHERE agent = ?", agent)}
    points = sum(1 for s in col.samples() if s["d"] in devs or (s["m"] == "agent" and s["d"] == agent))
    assert col.counter("same_time_merged") == 0
    assert st["produced"] == points + devices, (st, points)
    return {"last": last, "queued_at_end": len(st["seqs"]), "points": points}


# ------------------------------------------------------------------ 1
def test_broker_sigkill_while_collector_down_loses_nothing(tmp_path, shipped_broker, shipped_users, procs):
    col = Collector(tmp_path, shipped_broker, shipped_users, procs).start()
    cfg = agent_config(tmp_path, shipped_broker, "agent-a", "agent-a", shipped_users["agent-a"], "sw1")
    agent = start_agent(procs, cfg)
    wait_until(lambda: col.hwm("agent-a") >= 5, 60, "first messages stored")
    wait_until(lambda: len(queue(cfg)["seqs"]) < queue(cfg)["last"], 30, "watermark deletes confirmed rows")
    col.kill()
    stored_at_kill = col.hwm("agent-a")
    time.sleep(4)   # the broker queues these for the collector's persistent session and PUBACKs them
    before_kill = queue(cfg)["last"]
    shipped_broker.kill()   # no final save: whatever arrived since the last autosave (1 s) is gone
    st = queue(cfg)
    assert st["last"] >= stored_at_kill + 5, "the agent did not publish while the collector was down"
    # nothing the collector has not committed was deleted on PUBACK
    missing = set(range(stored_at_kill + 1, st["last"] + 1)) - set(st["seqs"])
    assert not missing, f"rows deleted without a watermark: {sorted(missing)[:20]}"
    assert agent.p.poll() is None
    shipped_broker.start()
    col.start()
    wait_until(lambda: col.hwm("agent-a", st["epoch"]) >= st["last"] and not col.gaps("agent-a"),
               CONFIRM_S + 60, "every seq published before the broker crash stored")
    assert agent.stop() == 0
    r = assert_all_stored_once(col, "agent-a", cfg)
    log = agent.text()
    print(f"broker SIGKILL: stored {stored_at_kill} at collector kill, {before_kill} produced before broker kill, "
          f"{len(st['seqs'])} rows queued at broker kill, {r['last']} total, {r['points']} points, "
          f"duplicates dropped {col.counter('duplicates')}, resends {log.count('sending them again')}")
    assert col.stop() == 0
    assert "Traceback" not in col.proc.text() and "Traceback" not in log


# ------------------------------------------------------------------ 2
def test_refused_publish_keeps_data(tmp_path, shipped_broker, shipped_users, procs):
    col = Collector(tmp_path, shipped_broker, shipped_users, procs).start()
    # user agent-a, agent id bldg-x: the shipped ACL lets agent-a write only campus/v1/+/+/agent-a/#
    bad = agent_config(tmp_path, shipped_broker, "bldg-x", "agent-a", shipped_users["agent-a"], "swx",
                       shutdown_drain_s=1)
    chk = subprocess.run([PY, "-m", "campus_sense", "agent", "--config", str(bad), "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert chk.returncode != 0
    assert "mqtt.username" in chk.stderr and "agent.id" in chk.stderr and "'agent-a'" in chk.stderr, chk.stderr
    real = start_agent(procs, bad)
    assert real.p.wait(60) != 0
    assert "mqtt.username" in real.text() and "agent.id" in real.text()
    assert not (bad.parent / "queue.db").exists() or queue(bad)["last"] == 0

    good_cfg = agent_config(tmp_path, shipped_broker, "agent-b", "agent-b", shipped_users["agent-b"], "sw-b")
    good = start_agent(procs, good_cfg)
    wait_until(lambda: col.hwm("agent-b") >= 3, 60, "agent-b stored")
    bad.write_text(bad.read_text().replace("keepalive_s: 5", "keepalive_s: 5, acl: custom"))
    refused = start_agent(procs, bad)
    wait_until(lambda: queue(bad)["last"] >= 15, 60, "the refused agent queues messages")
    hwm_b = col.hwm("agent-b")
    wait_until(lambda: "refused" in refused.text(), 30, "the refusal is logged")
    # queue depth grows, nothing deleted: every seq 1..last still queued
    st = queue(bad)
    assert st["seqs"] == list(range(1, st["last"] + 1)), st
    time.sleep(3)
    st2 = queue(bad)
    assert st2["seqs"] == list(range(1, st2["last"] + 1)) and st2["last"] > st["last"]
    # refused_total in its self-metrics (queued, like everything it produced)
    refused_totals = [it["f"]["refused_total"] for _, kind, p in queued_payloads(bad) if kind == "metrics"
                      for it in orjson.loads(wire.unpack(p))["samples"] if it["m"] == "agent"]
    assert refused_totals and max(refused_totals) > 0, refused_totals
    assert "refused" in refused.text() and "stay queued" in refused.text()
    # the collector stored nothing of bldg-x, and agent-b's ingest never stopped
    wait_until(lambda: col.hwm("agent-b") > hwm_b + 5, 30, "agent-b still ingested")
    assert col.q("SELECT count(*) FROM seq_state WHERE agent = 'bldg-x'")[0][0] == 0
    assert col.q("SELECT count(*) FROM agents WHERE id = 'bldg-x'")[0][0] == 0
    assert col.q("SELECT count(*) FROM devices WHERE id = 'swx'")[0][0] == 0
    assert httpx.get(f"{col.base}/health", timeout=5).status_code == 200
    assert refused.stop() == 0
    st3 = queue(bad)
    assert st3["seqs"] == list(range(1, st3["last"] + 1)), "a refused row was deleted"
    assert good.stop() == 0
    r = assert_all_stored_once(col, "agent-b", good_cfg)
    print(f"refused: bldg-x kept {len(st3['seqs'])} rows (max refused_total {max(refused_totals)}), "
          f"agent-b stored {r['last']} seqs / {r['points']} points")
    assert col.stop() == 0


# ------------------------------------------------------------------ 3
N3, K3 = 120, 20


def _takeover(port: int, user: str, password: str, client_id: str, v5: bool) -> str:
    """Connect with someone else's client id and a clean start/session, then disconnect."""
    result: list = []
    if v5:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                        clean_session=True)
    c.username_pw_set(user, password)
    c.on_connect = lambda cl, u, f, rc, p: result.append(str(rc))
    c.on_disconnect = lambda cl, u, f, rc, p: result.append(f"disconnect {rc}")
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        c.connect("127.0.0.1", port, clean_start=True, properties=props)
    else:
        c.connect("127.0.0.1", port)
    c.loop_start()
    wait_until(lambda: result, 10, "CONNACK")
    # it may even try to read what is queued for the collector
    c.subscribe(wire.SUBSCRIPTION, qos=1)
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    return result[0]


def test_session_takeover_is_impossible(tmp_path, shipped_broker, shipped_users, procs):
    col = Collector(tmp_path, shipped_broker, shipped_users, procs).start()
    body = httpx.get(f"{col.base}/health", timeout=5).text
    assert col.client_id not in body and "client_id" not in body, body
    tok = col.token("admin")
    stats = httpx.get(f"{col.base}/ingest/stats", headers={"Authorization": f"Bearer {tok}"}, timeout=5)
    assert stats.status_code == 200 and stats.json()["ingest"]["client_id"] == col.client_id
    assert httpx.get(f"{col.base}/ingest/stats", timeout=5).status_code == 401
    col.stop()

    pub = Publisher(shipped_broker.port, "agent-a", shipped_users["agent-a"], agent="agent-a", epoch="ep-takeover")
    t0 = int(time.time() * 1000) - 600_000
    for seq in range(1, N3 + 1):
        pub.durable("metrics", seq, [wire.sample("interface", "sw-t", t0 + seq, {"n": seq * 100 + j},
                                                 {"ifIndex": str(j)}) for j in range(K3)], wait=False)
    wait_until(lambda: not pub.c._out_messages, 30, "every PUBACK")
    pub.close()

    # agent-b's credentials with the collector's configured client id and with its effective one (= user name
    # under use_username_as_clientid), clean start (MQTT 5) and clean session (3.1.1)
    outcomes = []
    for cid in (col.client_id, "collector"):
        for v5 in (True, False):
            outcomes.append((cid, v5, _takeover(shipped_broker.port, "agent-b", shipped_users["agent-b"], cid, v5)))
    col.start()
    wait_until(lambda: col.hwm("agent-a", "ep-takeover") == N3, 60, f"all {N3} queued messages stored")
    time.sleep(0.5)
    assert col.gaps("agent-a") == []
    ns = [s["f"]["n"] for s in col.samples(device="sw-t")]
    got = (len(ns), len(set(ns)))
    assert got == (N3 * K3, N3 * K3), got
    print(f"takeover attempts {outcomes}: collector received all {N3} messages ({N3 * K3} samples)")
    body = httpx.get(f"{col.base}/health", timeout=5).text
    assert col.client_id not in body and "client_id" not in body
    assert col.stop() == 0
    assert "Traceback" not in col.proc.text()


# ------------------------------------------------------------------ 4
def test_collector_sigkill_and_broker_restart_with_real_agent(tmp_path, shipped_broker, shipped_users, procs):
    col = Collector(tmp_path, shipped_broker, shipped_users, procs).start()
    cfg = agent_config(tmp_path, shipped_broker, "agent-a", "agent-a", shipped_users["agent-a"], "sw1")
    agent = start_agent(procs, cfg)
    wait_until(lambda: col.hwm("agent-a") >= 8, 60, "messages stored")
    col.kill()                                  # mid-ingest: a group may be committed but not acked
    time.sleep(2)
    shipped_broker.stop()                               # SIGTERM: the broker saves its state
    time.sleep(1)
    shipped_broker.start()
    col.start()
    last = queue(cfg)["last"]
    wait_until(lambda: col.hwm("agent-a") >= last + 3 and not col.gaps("agent-a"), CONFIRM_S + 60,
               "ingest resumed")
    assert agent.stop() == 0
    r = assert_all_stored_once(col, "agent-a", cfg)
    # per cycle: one agent_poll and one interface sample per ifIndex; a stored duplicate would add samples
    per: dict[str, int] = {}
    for s in col.samples(device="sw1"):
        k = f"{s['m']}:{s['tags'].get('ifIndex', '')}"
        per[k] = per.get(k, 0) + 1
    polls = per.pop("agent_poll:")
    assert set(per) == {"interface:1", "interface:2", "interface:3"} and set(per.values()) == {polls}, per
    print(f"collector SIGKILL + broker restart: {r['last']} seqs, {polls} cycles, {r['points']} points, "
          f"{col.counter('duplicates')} duplicates dropped")
    assert col.stop() == 0
    assert "Traceback" not in col.proc.text() and "Traceback" not in agent.text()
    _ = json


# ------------------------------------------------------------------ 5
@pytest.fixture
def small_queue_broker(tmp_path, shipped_users):
    """The shipped broker, but it keeps at most 3 queued messages for an absent subscriber."""
    d = tmp_path / "mosquitto-small"
    d.mkdir()
    m = Mosquitto(shipped_users, d, shipped=True)
    conf = m.dir / "mosquitto.conf"
    conf.write_text("\n".join(line for line in conf.read_text().splitlines()
                              if not line.startswith("max_queued_messages")) + "\nmax_queued_messages 3\n")
    m.start()
    yield m
    m.kill()


def test_gap_left_by_the_broker_is_resent_while_connected(tmp_path, small_queue_broker, shipped_users, procs):
    """The broker PUBACKs the agent but drops messages queued for the absent collector (queue limit):
    the collector then commits later seqs around a gap. The agent, still connected, must re-send the
    rows in the gap after confirm_timeout_s although newer rows keep being confirmed."""
    broker = small_queue_broker
    col = Collector(tmp_path, broker, shipped_users, procs).start()
    # confirm timeout longer than the collector's absence: no re-send while it is down, the gap stays
    confirm = 12
    cfg = agent_config(tmp_path, broker, "agent-a", "agent-a", shipped_users["agent-a"], "sw1",
                       confirm_timeout_s=confirm)
    agent = start_agent(procs, cfg)
    wait_until(lambda: col.hwm("agent-a") >= 3, 60, "first messages stored")
    col.stop()
    at_stop = queue(cfg)["last"]
    wait_until(lambda: queue(cfg)["last"] >= at_stop + 8, 60, "8 messages while the collector is down")
    col.start()
    wait_until(lambda: col.gaps("agent-a"), 30, "the gap the broker left")
    gap = col.gaps("agent-a")
    try:
        wait_until(lambda: not col.gaps("agent-a"), confirm + 20, "the gap filled by a re-send")
    except TimeoutError:
        pytest.fail(f"gap {gap} still open {confirm + 20} s later (agent connected, producing); "
                    f"queued seqs {queue(cfg)['seqs'][:10]}...; collector hwm {col.hwm('agent-a')}")
    assert agent.stop() == 0
    assert_all_stored_once(col, "agent-a", cfg)
    assert col.stop() == 0
