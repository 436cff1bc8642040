"""Real edge agent process (synthetic devices) -> Mosquitto -> real collector process -> HTTP API."""
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.collector_util import wait_until, write_config
from tests.peers import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_agent_to_collector_api(tmp_path, mosquitto, mqtt_users):
    api_port = free_port()
    ccfg = write_config(tmp_path / "collector.yaml", mosquitto.port, "collector", mqtt_users["collector"],
                        tmp_path / "c.db", api_port, extra="agents: {offline_after_s: 60}\n",
                        client_id="collector-e2e")
    (tmp_path / "agent.pass").write_text(mqtt_users["agent-a"] + "\n")
    acfg = tmp_path / "agent.yaml"
    acfg.write_text(
        "agent: {id: agent-a, site: north, building: A}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, username: agent-a, "
        f"password_file: {tmp_path / 'agent.pass'}, keepalive_s: 5}}\n"
        f"queue: {{path: {tmp_path / 'queue.db'}, max_messages: 100000}}\n"
        "publish: {batch_interval_s: 0.3, heartbeat_s: 1, selfmetrics_s: 1}\n"
        "devices:\n"
        "  - {id: sw1, driver: synthetic, interval_s: 0.5, options: {interfaces: 3}}\n"
        "  - {id: ap9, driver: synthetic, interval_s: 0.5, options: {fail: true}}\n")
    run = lambda *a, **kw: subprocess.Popen([sys.executable, "-m", "campus_sense", *a], cwd=ROOT,
                                            stdout=open(tmp_path / f"{a[0]}.log", "ab"), stderr=subprocess.STDOUT)
    tok = subprocess.run([sys.executable, "-m", "campus_sense", "collector", "token", "create", "--role", "admin",
                          "--config", str(ccfg)], capture_output=True, text=True, check=True).stdout.strip()
    coll = run("collector", "--config", str(ccfg))
    agent = None
    base = f"http://127.0.0.1:{api_port}/api/v1"
    h = {"Authorization": f"Bearer {tok}"}

    def get(path):
        try:
            r = httpx.get(base + path, headers=h, timeout=5)
            return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None
    try:
        wait_until(lambda: (get("/health") or {}).get("ingest", {}).get("connected"), 30, "collector subscribed")
        agent = run("agent", "--config", str(acfg))
        ifs = wait_until(lambda: (x := get("/devices/sw1/interfaces")) and len(x) == 3
                         and all(i["in_bps"] is not None for i in x) and x, 60, "3 interfaces with rates")
        assert [i["name"] for i in ifs] == ["eth0", "eth1", "eth2"] and ifs[0]["speed_mbps"] == 1000
        devs = wait_until(lambda: (d := {x["id"]: x for x in get("/devices") or []}) and "ap9" in d
                          and d["ap9"]["reachable"] is False and d, 60, "ap9 unreachable")
        assert devs["ap9"]["reason"] == "unreachable" and devs["sw1"]["reachable"] is True
        assert devs["sw1"]["facts"]["serial"] == "SYN-sw1" and devs["sw1"]["building"] == "A"
        a = wait_until(lambda: (x := get("/agents")) and x[0]["queue_depth"] is not None and x[0], 30, "agent state")
        assert a["online"] and a["drivers"] == ["synthetic"] and a["config_hash"] and a["version"]
        assert a["gaps"] == []
        s = get("/series?measurement=interface&device=sw1&field=in_bps&tags=ifName=eth1")
        assert s["series"][0]["points"]
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0
        wait_until(lambda: not get("/agents")[0]["online"], 30, "agent offline after death")
        assert get("/agents")[0]["gaps"] == [] and get("/ingest/stats")["rejected_total"] == 0
    finally:
        for p in (agent, coll):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    assert coll.returncode == 0
    assert "Traceback" not in (tmp_path / "collector.log").read_text()
