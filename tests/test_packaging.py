"""Packages and services: pyproject extras, missing-extra messages, the systemd units (checked by
`systemd-analyze verify`, offline security exposure), sd_notify READY/WATCHDOG/STOPPING from the real
agent and collector processes, and the Raspberry Pi install recipe run below a prefix.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from campus_sense.yamlconf import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
CS = str(Path(PY).parent / "campus-sense")
UNITS = ROOT / "packaging" / "systemd"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(req: str) -> str:
    return re.split(r"[<>=\[;! ]", req, 1)[0].lower()


# ----------------------------------------------------------------------------- extras

def test_extras_split_the_dependencies():
    proj = PYPROJECT["project"]
    core = {_name(r) for r in proj["dependencies"]}
    ex = {k: {_name(r) for r in v} for k, v in proj["optional-dependencies"].items()}
    assert {"agent", "camera", "netwatch", "sensors", "collector", "all", "test"} <= set(ex)
    assert core == {"pydantic", "pyyaml", "orjson", "paho-mqtt", "aiomqtt", "zstandard"}   # what every agent needs
    assert ex["agent"] == {"pysnmp", "cryptography"}                           # core + SNMP
    for heavy in ("fastapi", "uvicorn", "numpy", "opencv-python-headless", "influxdb-client", "scapy", "amqtt"):
        assert heavy not in core | ex["agent"], heavy
    assert set().union(*(ex[k] for k in ("agent", "camera", "netwatch", "sensors", "collector"))) <= ex["all"]


def test_every_driver_extra_exists_and_every_configs_folder_is_packaged():
    from edge_agent.config import DRIVER_EXTRAS, DRIVERS
    extras = PYPROJECT["project"]["optional-dependencies"]
    for drv, (extra, _mods) in DRIVER_EXTRAS.items():
        assert drv in DRIVERS and extra in extras, drv
    data = PYPROJECT["tool"]["setuptools"]["data-files"]
    shipped = {Path(k).name for k in data if "firmware_configs" in k}
    assert {p.name for p in (ROOT / "firmware_configs").iterdir() if p.is_dir()} <= shipped


def test_every_data_file_of_the_packages_ships():
    """Files the code reads at run time (PostgreSQL migrations, UI catalogs and assets, profiles) are
    in the wheel: each non-Python file of the packages matches a package-data pattern."""
    import fnmatch
    import subprocess
    pats = PYPROJECT["tool"]["setuptools"]["package-data"]["*"]
    files = subprocess.run(["git", "ls-files", "campus_sense", "collector", "edge_agent", "drivers"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    assert any(f.endswith(".sql") for f in files)
    missing = [f for f in files if not f.endswith((".py", ".md"))
               and not any(fnmatch.fnmatch(Path(f).name, p) for p in pats)]
    assert not missing, missing


def test_a_driver_without_its_extra_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    from edge_agent import config
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "scapy" else real(n, *a))
    with pytest.raises(config.MissingExtra, match=r"\[netwatch\] extra .*pip install 'campus-sense\[netwatch\]'"):
        config.driver_module("netwatch")
    (tmp_path / "p").write_text("x\n")
    (tmp_path / "agent.yaml").write_text(
        "agent: {id: a, site: s, building: b}\nmqtt: {host: h, username: a, password_file: p}\nqueue: {path: q.db}\n"
        "devices:\n  - {id: w, driver: netwatch, options: {interface: eth0}}\n")
    with pytest.raises(ConfigError, match=r"agent.yaml:5: devices.0.driver: driver 'netwatch' needs the \[netwatch\]"):
        config.load(tmp_path / "agent.yaml")


def test_a_command_without_its_extra_names_the_extra():
    code = ("import sys; sys.modules['uvicorn'] = None; sys.modules['fastapi'] = None\n"
            "from campus_sense.cli import main; sys.exit(main(['collector', '--config', '/nonexistent.yaml']))")
    r = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs the [collector] extra" in r.stderr and "Traceback" not in r.stderr, r.stderr


# ----------------------------------------------------------------------------- systemd units

def _units(tmp_path: Path) -> list[Path]:
    out = []
    for u in sorted(UNITS.glob("*.service")):
        t = tmp_path / u.name   # ExecStart must exist for verify: point it at this checkout's venv
        t.write_text(u.read_text().replace("/opt/campus-sense/venv/bin/campus-sense", CS))
        out.append(t)
    return out


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_units_verify_clean_and_hardened(tmp_path):
    units = _units(tmp_path)
    assert [u.name for u in units] == ["campus-sense-agent.service", "campus-sense-collector.service"]
    for u in units:
        text = u.read_text()
        for line in ("Type=notify", "User=campus-sense", "ProtectSystem=strict", "StateDirectory=campus-sense",
                     "Restart=on-failure", "NoNewPrivileges=yes", "CapabilityBoundingSet="):
            assert re.search(rf"^{re.escape(line)}", text, re.M), (u.name, line)
        assert re.search(r"^WatchdogSec=\d+", text, re.M)
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(u)], capture_output=True, text=True,
                           timeout=60)
        # verify exits 0 even for unknown keys: any message is a finding
        assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (u.name, r.stdout + r.stderr)
        s = subprocess.run(["systemd-analyze", "security", "--offline=true", str(u)], capture_output=True,
                           text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", s.stdout + s.stderr)
        if m:   # (older systemd: no --offline)
            assert float(m.group(1)) <= 2.0, (u.name, m.group(0))
    bad = tmp_path / "bad.service"
    bad.write_text(units[0].read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(bad)], capture_output=True, text=True)
    assert "Unknown key" in r.stderr          # the check above would catch a typo


# ----------------------------------------------------------------------------- sd_notify

class NotifySocket:
    def __init__(self, d: Path):
        self.path = str(d / "notify.sock")
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(self.path)
        self.s.settimeout(0.2)
        self.msgs: list[str] = []

    def wait(self, what: str, n: int = 1, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if sum(what in m.split("\n") for m in self.msgs) >= n:
                return
            try:
                self.msgs.append(self.s.recv(4096).decode())
            except socket.timeout:
                pass
        raise TimeoutError(f"{what} x{n} not received: {self.msgs}")


def _run_notified(tmp_path: Path, args: list[str]) -> tuple[NotifySocket, subprocess.Popen]:
    ns = NotifySocket(tmp_path)
    env = dict(os.environ, NOTIFY_SOCKET=ns.path, WATCHDOG_USEC="1000000")
    log = open(tmp_path / "proc.log", "ab")
    return ns, subprocess.Popen([PY, "-m", "campus_sense", *args], cwd=ROOT, env=env, stdout=log, stderr=log)


def test_agent_sd_notify_ready_watchdog_stopping(tmp_path):
    (tmp_path / "p").write_text("x\n")
    (tmp_path / "agent.yaml").write_text(
        "agent: {id: a, site: s, building: b}\n"
        "mqtt: {host: 127.0.0.1, port: 9, username: a, password_file: p, reconnect_max_s: 1}\n"
        "queue: {path: q.db}\ndevices:\n  - {id: d1, driver: synthetic, interval_s: 1}\n"
        .replace(", reconnect_max_s: 1", ""))
    ns, p = _run_notified(tmp_path, ["agent", "--config", str(tmp_path / "agent.yaml")])
    try:
        ns.wait("READY=1")
        assert any("STATUS=agent a: 1 of 1 devices running" in m for m in ns.msgs), ns.msgs
        ns.wait("WATCHDOG=1", 3)          # every WATCHDOG_USEC/2
        p.send_signal(signal.SIGTERM)
        ns.wait("STOPPING=1")
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()


def test_collector_sd_notify_ready_watchdog_stopping(tmp_path):
    from tests.collector_util import write_config
    from tests.peers import free_port
    cfg = write_config(tmp_path / "collector.yaml", 9, "collector", secrets.token_hex(4), tmp_path / "c.db",
                       free_port())
    ns, p = _run_notified(tmp_path, ["collector", "--config", str(cfg)])
    try:
        ns.wait("READY=1")
        ns.wait("WATCHDOG=1", 2)
        p.send_signal(signal.SIGTERM)
        ns.wait("STOPPING=1")
        assert p.wait(60) == 0, (tmp_path / "proc.log").read_text()[-2000:]
    finally:
        if p.poll() is None:
            p.kill()


# ----------------------------------------------------------------------------- install recipe

@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_pi_install_recipe_below_a_prefix(tmp_path):
    """packaging/install-agent.sh as far as this machine allows: no apt, no user, no pip (this
    checkout's venv), no systemctl; the unit is installed and verified, the bundle installed."""
    from collector.enrol import EnrolSettings, write_bundle
    bundle = write_bundle(tmp_path / "b.tar.gz", "bldg-a", "north", "A", "pw-" + secrets.token_hex(8),
                          EnrolSettings(broker_host="mqtt.example", passwd_file="x", acl_file="y"))
    root = tmp_path / "root"
    r = subprocess.run(["bash", str(ROOT / "packaging/install-agent.sh"), "--prefix", str(root), "--venv",
                        str(Path(PY).parent.parent), "--no-pip", "--bundle", str(bundle)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    unit = (root / "etc/systemd/system/campus-sense-agent.service").read_text()
    assert f"ExecStart={CS} agent --config {root}/etc/campus-sense/agent.yaml" in unit
    etc = root / "etc/campus-sense"
    assert oct((etc / "mqtt.pass").stat().st_mode & 0o777) == "0o600"
    assert f"queue: {{path: {root}/var/lib/campus-sense/agent-queue.db}}" in (etc / "agent.yaml").read_text()
    r = subprocess.run([CS, "agent", "--config", str(etc / "agent.yaml"), "--check"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # idempotent: a second run changes nothing and succeeds
    r = subprocess.run(["bash", str(ROOT / "packaging/install-agent.sh"), "--prefix", str(root), "--venv",
                        str(Path(PY).parent.parent), "--no-pip", "--bundle", str(bundle)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "kept" in r.stderr, r.stderr
