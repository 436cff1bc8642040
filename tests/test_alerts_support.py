"""Helpers for the alert API / console tests: a real collector process with rules and notify
config on a real Mosquitto. (No tests in this module.)"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from collector.store.sqlite import SQLiteStore
from tests.collector_util import Publisher, wait_until, write_config
from tests.peers import free_port

ROOT = Path(__file__).resolve().parent.parent

RULES = """\
rules:
  - name: door-forced
    kind: event
    event: door_forced
    severity: critical
    summary: "Door forced: {device} in {building}/{room}"
  - name: uplink-down
    kind: event
    event: link_down
    clear_event: link_up
    by: [ifName]
    severity: warning
    summary: "{device} {ifName} down"
  - name: fridge-warm
    kind: threshold
    measurement: temperature
    field: value
    op: ">"
    value: 5
    severity: warning
    summary: "{device} at {value} °C"
"""


def notify_yaml(dead_port: int) -> str:
    return (
        "channels:\n"
        f"  broken-hook: {{type: webhook, url: 'http://127.0.0.1:{dead_port}/hook', timeout: 2s,\n"
        "                retry: {max_attempts: 1}}\n"
        "route:\n"
        "  channels: [broken-hook]\n"
        "  group_wait: 0s\n"
        "  group_interval: 0s\n"
        "outbox: {evaluation_interval: 0.2s}\n")


class CollectorProc:
    """collector subprocess with rules (+ notify), tokens for each role, an agent publisher."""

    def __init__(self, tmp_path: Path, mosquitto, users: dict, rules: str = RULES, notify: bool = True,
                 extra: str = ""):
        self.dir = tmp_path
        self.api_port = free_port()
        (tmp_path / "rules.yaml").write_text(rules)
        ex = "rules: {paths: [rules.yaml], db: alerts.db, tick_s: 0.2}\n" + extra
        if notify:
            (tmp_path / "notify.yaml").write_text(notify_yaml(free_port()))
            ex += "notify: {config: notify.yaml}\n"
        self.cfg = write_config(tmp_path / "collector.yaml", mosquitto.port, "collector", users["collector"],
                                tmp_path / "c.db", self.api_port, extra=ex, client_id="collector-alerts")
        st = SQLiteStore(str(tmp_path / "c.db"))
        self.tokens = {role: st.token_create(role, f"{role}-user")[1] for role in ("admin", "security", "it")}
        st.close()
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.log = tmp_path / "collector.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "campus_sense", "collector", "--config", str(self.cfg)],
                                     cwd=ROOT, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.base + "/api/v1", timeout=10)
        wait_until(lambda: self._connected(), 30, "collector subscribed")
        self.pub = Publisher(mosquitto.port, "agent-a", users["agent-a"], agent="agent-a", building="A")
        self.seq = 0

    def _connected(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"collector exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            return bool(self.http.get("/health").json()["ingest"]["connected"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return False

    def h(self, role: str) -> dict:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def get(self, path: str, role: str = "admin", **kw):
        return self.http.get(path, headers=self.h(role), **kw)

    def post(self, path: str, body=None, role: str = "security"):
        return self.http.post(path, json=body if body is not None else {}, headers=self.h(role))

    def birth(self, devices: list[dict]) -> None:
        self.pub.state("birth", version="test", config_hash="x", drivers=["test"], devices=devices)

    def events(self, *items: dict) -> None:
        self.seq += 1
        self.pub.durable("events", self.seq, list(items))

    def metrics(self, *items: dict) -> None:
        self.seq += 1
        self.pub.durable("metrics", self.seq, list(items))

    def wait_alert(self, rule: str, device: str | None = None, role: str = "admin", state: str = "active"):
        def find():
            r = self.get(f"/alerts?state={state}&rule={rule}", role)
            for a in r.json() if r.status_code == 200 else []:
                if device is None or a["labels"].get("device") == device:
                    return a
            return None
        return wait_until(find, 30, f"alert {rule} {device or ''}")

    def stop(self) -> int:
        self.pub.close()
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def now_ms() -> int:
    return int(time.time() * 1000)
