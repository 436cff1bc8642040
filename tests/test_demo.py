"""`campus-sense demo` runs the whole system with nothing installed beforehand and exits cleanly."""
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.peers import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_demo_serves_devices_interfaces_and_live_rates(tmp_path):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "campus_sense", "demo", "--port", str(port), "--duration", "45",
                          "--interval", "3", "--fail-at", "8", "--data-dir", str(tmp_path)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=open(tmp_path / "demo.err", "wb"), text=True)
    try:
        out = ""
        while "Ctrl-C" not in out:
            line = p.stdout.readline()
            assert line, f"demo exited early: {(tmp_path / 'demo.err').read_text()[-2000:]}"
            out += line
        token = re.search(r"API token\s+(\S+)", out).group(1)
        assert f"http://127.0.0.1:{port}/api/v1" in out and "/docs" in out
        # the web UI's URL and a login (user admin, a random password) next to the token
        ui_pw = re.search(r"web UI\s+(\S+)\s+\(login: user admin, password (\S+)\)", out)
        assert ui_pw and ui_pw.group(1) == f"http://127.0.0.1:{port}/"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as ui:
            form = ui.get("/ui/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
            r = ui.post("/ui/login", data={"username": "admin", "password": ui_pw.group(2), "csrf": csrf})
            assert r.status_code == 303 and ui.get("/ui/").status_code == 200
        h = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}/api/v1"
        assert httpx.get(f"{base}/devices", timeout=5).status_code == 401   # the API needs the token
        deadline = time.monotonic() + 25
        rates = {}
        while time.monotonic() < deadline and len(rates) < 3:
            devs = httpx.get(f"{base}/devices", headers=h, timeout=5).json()
            for d in devs:
                ifs = httpx.get(f"{base}/devices/{d['id']}/interfaces", headers=h, timeout=5).json()
                live = [i for i in ifs if i.get("in_bps")]
                if live:
                    rates[d["id"]] = (ifs, live)
            time.sleep(1)
        assert set(rates) == {"core-sw1", "access-sw1", "wlc1"}, rates.keys()
        core_ifs, core_live = rates["core-sw1"]
        assert any(i["speed_mbps"] == 10000 for i in core_ifs)          # 10G uplinks
        access_ifs, _ = rates["access-sw1"]
        assert sum(1 for i in access_ifs if i["speed_mbps"] == 1000) >= 48   # 48 access ports
        assert all(i["in_bps"] > 0 for i in core_live)
        # The scripted port failure raises an alert through the collector's rule engine.
        alerts = []
        while time.monotonic() < deadline + 10 and not alerts:
            alerts = [a for a in httpx.get(f"{base}/alerts", headers=h, timeout=5).json()
                      if a["rule"] == "demo-access-port-down"]
            time.sleep(1)
        assert alerts and alerts[0]["state"] == "firing" and alerts[0]["labels"]["device"] == "access-sw1"
        # The rest of the simulated building: every kind of device reaches the API.
        want = [  # (device, what must be seen: a fact, an event type or the latest sample of a measurement)
            ("cam-a105", "fact", "serial"), ("cam-a105", "event", "motion"),
            ("cam-a105-video", "latest", "camera_health"), ("proj-a101", "latest", "projector"),
            ("canteen-fridge-1", "latest", "temperature"), ("canteen-gas-1", "latest", "gas"),
            ("door-a101", "event", "door_forced"), ("fire-a", "event", "fire_alarm")]
        seen: dict[tuple, object] = {}
        while time.monotonic() < deadline + 25 and len(seen) < len(want):
            for key in want:
                dev, kind, what = key
                if key in seen:
                    continue
                if kind == "event":
                    evs = httpx.get(f"{base}/events", params={"device": dev, "type": what}, headers=h,
                                    timeout=5).json()
                    if evs:
                        seen[key] = evs[0]
                    continue
                if kind == "fact":
                    r = httpx.get(f"{base}/devices/{dev}", headers=h, timeout=5)
                    if r.status_code == 200 and r.json()["facts"].get(what):
                        seen[key] = r.json()["facts"]
                    continue
                ser = httpx.get(f"{base}/series", params={"measurement": what, "device": dev}, headers=h,
                                timeout=5).json()["series"]
                if ser and ser[0]["points"]:
                    seen[key] = ser[0]["points"][-1][1]
            time.sleep(1)
        assert set(seen) == set(want), [k for k in want if k not in seen]
        assert seen["cam-a105", "event", "motion"]["data"]["origin"] == "onvif"     # the camera's own events
        assert seen["fire-a", "event", "fire_alarm"]["severity"] == "critical"
        video = seen["cam-a105-video", "latest", "camera_health"]
        assert video["ok"] is True and video["status"] == "ok"                     # a live, usable picture
        assert seen["proj-a101", "latest", "projector"]["power_state"] == "on"
        assert 0 < seen["canteen-fridge-1", "latest", "temperature"]["value"] < 8
        # the campus model (campus.yaml: rooms, port roles, uplinks) feeds the coverage report
        cov = httpx.get(f"{base}/compliance/coverage", params={"building": "A"}, headers=h, timeout=10).json()
        checks = {c["check"] for b in cov["buildings"] for c in b["checks"]}
        checks |= {c["check"] for b in cov["buildings"] for r in b.get("rooms", []) for c in r["checks"]}
        assert {"desk_port_speed", "uplink_redundancy", "agent_online"} <= checks, checks
        # Wi-Fi coverage from the controller's client RSSI/SNR, per room of the AP (campus model)
        wifi = {c["room"]: c["status"] for b in cov["buildings"] for r in b.get("rooms", []) for c in r["checks"]
                if c["check"] == "wifi_coverage"}
        assert wifi["A-101"] == "pass" and wifi["A-104"] == "fail", wifi          # A-104's AP is heard weakly
        assert wifi["A-106"] != "pass", wifi                                       # its AP is down
        # the access switch's forwarding table and the core's ARP table place the camera on its port
        w = httpx.get(f"{base}/compliance/where", params={"q": "02:ca:5e:00:01:05"}, headers=h, timeout=10).json()
        m = w["matches"][0]
        assert (m["device"], m["switch"], m["port"], m["room"]) == ("cam-a105", "access-sw1", "Gi1/0/25", "A-105"), m
        assert "10.10.1.25" in m["ips"]
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
