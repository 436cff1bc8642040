"""Enrolment end to end: `campus-sense enrol` on the collector host against a real Mosquitto (shipped ACL,
client id = user name) and a running collector, `campus-sense agent enrol BUNDLE` on the "Pi" (a
prefix), the agent delivering data with the enrolled identity, publishing allowed only under its
own site/building/id, re-enrolment (new password) and revocation (cannot connect, data refused).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes

from campus_sense import wire
from collector.store.sqlite import SQLiteStore
from tests.collector_util import wait_until, write_config
from tests.peers import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "campus_sense", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def connect(port: int, user: str, password: str) -> tuple[mqtt.Client | None, str]:
    """MQTT 5 client, connected (or None and the CONNACK reason)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    out: dict = {}
    c.on_connect = lambda cl, ud, fl, rc, props=None: out.setdefault("rc", rc)
    try:
        c.connect("127.0.0.1", port)
    except OSError as e:
        return None, str(e)
    c.loop_start()
    wait_until(lambda: "rc" in out, 10, "CONNACK")
    if out["rc"].is_failure:
        c.loop_stop()
        return None, str(out["rc"])
    return c, "ok"


def puback(c: mqtt.Client, topic: str) -> int:
    """Publish QoS 1; the PUBACK reason code (0 or 16 = accepted, 135 = not authorized)."""
    got: dict = {}
    c.on_publish = lambda cl, ud, mid, rc, props=None: got.setdefault(mid, rc.value)
    info = c.publish(topic, b"{}", qos=1)
    wait_until(lambda: info.mid in got, 10, f"PUBACK for {topic}")
    return got[info.mid]


@pytest.fixture
def setup(tmp_path):
    users = {"collector": secrets.token_hex(8)}
    (tmp_path / "mosq").mkdir()
    broker = Mosquitto(users, tmp_path / "mosq", shipped=True).start()
    api = free_port()
    cdir = tmp_path / "collector"
    cdir.mkdir()
    cfg = write_config(cdir / "collector.yaml", broker.port, "collector", users["collector"], cdir / "c.db", api,
                       extra=("ingest: {batch_messages: 50, batch_ms: 20}\n"
                              "enrol:\n  broker_host: 127.0.0.1\n"
                              f"  broker_port: {broker.port}\n"
                              f"  passwd_file: {broker.dir / 'passwd'}\n"
                              f"  acl_file: {broker.dir / 'acl'}\n"
                              f"  reload_command: [kill, -HUP, '{broker.proc.pid}']\n"
                              "  bundle_dir: bundles\n"))
    log = open(cdir / "collector.log", "ab")
    col = subprocess.Popen([PY, "-m", "campus_sense", "collector", "--config", str(cfg)], cwd=ROOT,
                           stdout=log, stderr=log)
    base = f"http://127.0.0.1:{api}/api/v1"

    def connected():
        assert col.poll() is None, (cdir / "collector.log").read_text()[-2000:]
        try:
            return httpx.get(f"{base}/health", timeout=2).json()["ingest"]["connected"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
    wait_until(connected, 60, "collector connected")
    procs: list[subprocess.Popen] = [col]
    yield {"broker": broker, "cfg": cfg, "cdir": cdir, "base": base, "procs": procs, "tmp": tmp_path}
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    broker.stop()


def test_enrol_install_deliver_acl_reenrol_revoke(setup):
    broker, cfg, cdir, base, tmp = setup["broker"], setup["cfg"], setup["cdir"], setup["base"], setup["tmp"]

    # ---- no agent identity exists before enrolment, and enrol refuses bad input
    assert "bldg-a" not in (broker.dir / "passwd").read_text()
    r = cli("enrol", "bldg/a", "--site", "north", "--building", "A", "-c", str(cfg))
    assert r.returncode != 0 and "bldg/a" in r.stderr
    r = cli("enrol", "bldg-a", "-c", str(cfg))
    assert r.returncode == 2 and "--site and --building are required" in r.stderr

    # ---- enrol: broker user + ACL block + binding + one bundle
    r = cli("enrol", "bldg-a", "--site", "north", "--building", "A", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    bundle = cdir / "bundles" / "bldg-a.tar.gz"
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    with tarfile.open(bundle) as t:
        names = {m.name: m for m in t.getmembers()}
        assert set(names) == {"campus-sense-bldg-a", *(f"campus-sense-bldg-a/{n}" for n in
                                                        ("agent.yaml", "mqtt.pass", "enrol.json"))}
        assert stat.S_IMODE(names["campus-sense-bldg-a/mqtt.pass"].mode) == 0o600
        password = t.extractfile("campus-sense-bldg-a/mqtt.pass").read().decode().strip()
        meta = json.loads(t.extractfile("campus-sense-bldg-a/enrol.json").read())
    assert len(password) >= 32 and meta["site"] == "north" and meta["building"] == "A"
    acl = (broker.dir / "acl").read_text()
    assert "user bldg-a\ntopic write campus/v1/north/A/bldg-a/#\n" in acl
    assert "pattern write" not in acl.replace("# ", "")        # no catch-all grant for agents
    assert password not in (broker.dir / "passwd").read_text()  # hashed
    st = SQLiteStore(str(cdir / "c.db"))
    try:
        assert st.agent_binding("bldg-a")["site"] == "north"
    finally:
        st.close()
    r = cli("enrol", "--list", "-c", str(cfg))
    assert r.returncode == 0 and r.stdout.split("\t")[:4] == ["bldg-a", "north", "A", "ok"], r.stdout

    # ---- install on the "Pi": files, modes; paths in agent.yaml are relative to its folder
    pi = tmp / "pi"
    r = cli("agent", "enrol", str(bundle), "--prefix", str(pi))
    assert r.returncode == 0, r.stderr
    etc = pi / "etc" / "campus-sense"
    assert stat.S_IMODE((etc / "mqtt.pass").stat().st_mode) == 0o600
    text = (etc / "agent.yaml").read_text()
    assert "password_file: mqtt.pass" in text and str(pi / "var/lib/campus-sense/agent-queue.db") in text
    (etc / "agent.yaml").write_text(text.replace(
        "devices: []\n",
        "publish: {batch_interval_s: 0.3, heartbeat_s: 2, reconnect_max_s: 1}\n"
        "devices:\n  - {id: a-sw1, driver: synthetic, interval_s: 0.5, room: A-101, type: switch,"
        " options: {interfaces: 2}}\n"))
    log = open(pi / "agent.log", "ab")
    agent = subprocess.Popen([PY, "-m", "campus_sense", "agent", "--config", str(etc / "agent.yaml")],
                             cwd=ROOT, stdout=log, stderr=log)   # cwd is NOT the config folder
    setup["procs"].append(agent)
    tok = cli("collector", "token", "create", "--role", "admin", "--config", str(cfg)).stdout.strip()
    h = {"Authorization": f"Bearer {tok}"}

    def devices():
        assert agent.poll() is None, (pi / "agent.log").read_text()[-2000:]
        r = httpx.get(f"{base}/devices", headers=h, timeout=5)
        return [d for d in r.json() if d["id"] == "a-sw1"] if r.status_code == 200 else []
    d = wait_until(devices, 60, "data of the enrolled agent in the API")[0]
    assert (d["site"], d["building"], d["agent"]) == ("north", "A", "bldg-a")

    # ---- the enrolled identity may publish only under its own site/building/id
    c, why = connect(broker.port, "bldg-a", password)   # takes over the agent's session (same client id)
    assert c is not None, why
    try:
        assert puback(c, wire.topic("north", "A", "bldg-a", "events")) in (0, 16)
        assert puback(c, wire.topic("north", "B", "bldg-a", "events")) == 135      # other building
        assert puback(c, wire.topic("south", "A", "bldg-a", "events")) == 135      # other site
        assert puback(c, wire.topic("north", "A", "bldg-b", "events")) == 135      # other agent id
        assert puback(c, wire.commit_topic("bldg-a")) == 135                      # watermarks: collector only
    finally:
        c.disconnect()
        c.loop_stop()
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(30) == 0

    # ---- re-enrol: a new password; the old one stops working; reinstall keeps the devices
    r = cli("enrol", "bldg-a", "-c", str(cfg))   # site/building from the binding
    assert r.returncode == 0 and "re-enrolled" in r.stderr, r.stderr
    with tarfile.open(bundle) as t:
        password2 = t.extractfile("campus-sense-bldg-a/mqtt.pass").read().decode().strip()
    assert password2 != password
    assert connect(broker.port, "bldg-a", password)[0] is None
    r = cli("agent", "enrol", str(bundle), "--prefix", str(pi))
    assert r.returncode == 0 and "kept" in r.stderr, r.stderr
    assert "a-sw1" in (etc / "agent.yaml").read_text()
    assert (etc / "mqtt.pass").read_text().strip() == password2
    c, why = connect(broker.port, "bldg-a", password2)
    assert c is not None, why
    c.disconnect()
    c.loop_stop()

    # ---- moving needs --move; a bundle of another agent does not overwrite an installed one
    r = cli("enrol", "bldg-a", "--site", "south", "--building", "A", "-c", str(cfg))
    assert r.returncode == 1 and "--move" in r.stderr
    r = cli("enrol", "bldg-b", "--site", "north", "--building", "B", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    r = cli("agent", "enrol", str(cdir / "bundles" / "bldg-b.tar.gz"), "--prefix", str(pi))
    assert r.returncode == 1 and "belongs to agent 'bldg-a'" in r.stderr

    # ---- revoke: the user and its ACL block are gone, it cannot connect, the store refuses its data
    r = cli("enrol", "bldg-a", "--revoke", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert not [ln for ln in (broker.dir / "acl").read_text().splitlines()
                if "bldg-a" in ln and not ln.startswith("#   ")]   # (the shipped comment's example stays)
    assert "bldg-a:" not in (broker.dir / "passwd").read_text()
    c, why = connect(broker.port, "bldg-a", password2)
    assert c is None and "authori" in why.lower(), why
    st = SQLiteStore(str(cdir / "c.db"))
    try:
        payload = wire.encode_durable("metrics", "bldg-a", "e9", 1, int(time.time() * 1000), [wire.encode_item(
            wire.sample("interface", "a-sw1", int(time.time() * 1000), {"in_bps": 1.0}, {"ifIndex": "1"}))])
        res = st.apply([wire.decode(wire.topic("north", "A", "bldg-a", "metrics"), payload)], [])
        assert not res.accepted and [d.reason for d in res.dead] == ["agent_revoked"]
    finally:
        st.close()
    r = cli("enrol", "--list", "-c", str(cfg))
    assert "bldg-a" not in r.stdout and "bldg-b\tnorth\tB\tok" in r.stdout
    _ = os
