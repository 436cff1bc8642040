"""docker/ is complete: compose.yaml parses (`docker compose config` when the compose CLI is here;
always: every file it mounts exists after bootstrap.sh, every variable it uses is in env.example),
bootstrap.sh creates the secrets layout with no default credential, and the example configs work:
the broker config (TLS, ACL, passwd) runs in a real Mosquitto, the example collector.yaml connects
to it over TLS, `campus-sense enrol` with its enrol: block produces a bundle whose agent connects
over TLS with the bootstrap CA and delivers data.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from campus_sense.yamlconf import load_yaml
from tests.collector_util import wait_until
from tests.peers import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A copy of docker/ after `./bootstrap.sh 127.0.0.1 --no-docker` (../ still points at the repo)."""
    if not shutil.which("openssl") or not shutil.which("mosquitto_passwd"):
        pytest.skip("openssl / mosquitto_passwd missing (scripts/install.sh --test)")
    top = tmp_path_factory.mktemp("deploy")
    d = top / "docker"
    shutil.copytree(DOCKER, d, ignore=shutil.ignore_patterns(".env", "secrets", "bundles", "agent", "passwd",
                                                             "certs"))
    for name in ("dashboards", "campus_sense", "pyproject.toml"):   # what ../ references
        (top / name).symlink_to(ROOT / name)
    r = subprocess.run(["bash", str(d / "bootstrap.sh"), "127.0.0.1", "--no-docker"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r2 = subprocess.run(["bash", str(d / "bootstrap.sh"), "127.0.0.1", "--no-docker"], capture_output=True,
                        text=True, timeout=120)   # idempotent
    assert r2.returncode == 0, r2.stderr
    return d


def test_bootstrap_secrets_layout(deployed):
    d = deployed
    assert stat.S_IMODE((d / "secrets").stat().st_mode) == 0o700
    for f in ("secrets/collector-mqtt.pass", "secrets/influx-write.token", "mosquitto/passwd",
              "mosquitto/certs/server.key", "mosquitto/certs/ca.key", ".env"):
        assert stat.S_IMODE((d / f).stat().st_mode) & 0o077 == 0, f
    env = dict(ln.split("=", 1) for ln in (d / ".env").read_text().splitlines() if "=" in ln and ln[0] != "#")
    assert env and all(v.strip() for v in env.values()), env          # no empty (default) credential
    assert (d / "mosquitto/passwd").read_text().startswith("collector:$7$")
    pw = (d / "secrets/collector-mqtt.pass").read_text().strip()
    assert len(pw) >= 24 and pw not in (d / "mosquitto/passwd").read_text()
    v = subprocess.run(["openssl", "verify", "-CAfile", str(d / "mosquitto/certs/ca.crt"),
                        str(d / "mosquitto/certs/server.crt")], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    t = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                        str(d / "mosquitto/certs/server.crt")], capture_output=True, text=True).stdout
    assert "DNS:mosquitto" in t and "IP Address:127.0.0.1" in t
    assert "broker_host: 127.0.0.1" in (d / "collector.yaml").read_text()


def _env_example_vars() -> set[str]:
    return {ln.split("=", 1)[0] for ln in (DOCKER / "env.example").read_text().splitlines() if "=" in ln
            and not ln.startswith("#")}


def test_compose_references(deployed):
    d = deployed
    text = (d / "compose.yaml").read_text()
    assert set(re.findall(r"\$\{(\w+)", text)) <= _env_example_vars()
    data, _ = load_yaml(d / "compose.yaml")
    services = data["services"]
    assert {"mosquitto", "collector", "agent"} <= set(services)
    assert services["agent"]["profiles"] == ["agent"] and services["agent"]["command"][0] == "agent"
    b = services["collector"]["build"]
    assert (d / b["context"] / b["dockerfile"]).is_file()
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            host = v.split(":", 1)[0]
            if host.startswith((".", "/")):
                assert (d / host).exists(), f"{name}: {host} does not exist"
            else:
                assert host in data["volumes"], f"{name}: named volume {host} not declared"
    # the broker config names files inside the mounted ./mosquitto folder
    for line in (d / "mosquitto/mosquitto.conf").read_text().splitlines():
        k, _, v = line.partition(" ")
        if k in ("cafile", "certfile", "keyfile", "password_file", "acl_file"):
            assert v.startswith("/mosquitto/config/") and (d / "mosquitto" / v[len("/mosquitto/config/"):]).is_file()
    # the collector's rules path exists in the image (firmware_configs is copied to /opt/campus-sense)
    cfg, _ = load_yaml(d / "collector.yaml")
    for p in cfg["rules"]["paths"]:
        assert (ROOT / p.replace("/opt/campus-sense/", "")).exists()
    dockerfile = (d / "Dockerfile").read_text()
    assert "'.[all]'" in dockerfile and "mosquitto" in dockerfile   # mosquitto_passwd for enrol


def test_docker_compose_config_parses(deployed):
    if not shutil.which("docker"):
        pytest.skip("no docker CLI (test_compose_references checked the references)")
    v = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if v.returncode != 0:
        pytest.skip("docker CLI without the compose plugin (test_compose_references checked the references)")
    r = subprocess.run(["docker", "compose", "--profile", "agent", "--profile", "influx", "config", "--quiet"],
                       cwd=deployed, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _container_etc(d: Path, etc: Path, broker_port: int, mosq_pid: int | None) -> Path:
    """The collector container's /etc/campus-sense, as compose.yaml mounts it (host paths)."""
    etc.mkdir()
    for src, dst in (("campus.yaml", "campus.yaml"), ("secrets", "secrets"), ("mosquitto/certs/ca.crt", "ca.crt")):
        (etc / dst).symlink_to(d / src)
    (etc / "broker").symlink_to(d / "mosquitto")
    text = (d / "collector.yaml").read_text()
    var = etc.parent / "var"        # the collector-data volume
    var.mkdir()
    text = (text.replace("host: mosquitto", "host: 127.0.0.1").replace("port: 8883", f"port: {broker_port}", 1)
            .replace("/var/lib/campus-sense", str(var)).replace("/opt/campus-sense/", str(ROOT) + "/")
            .replace("host: 0.0.0.0, port: 8080", f"host: 127.0.0.1, port: {free_port()}"))
    text += f"  reload_command: [kill, -HUP, '{mosq_pid}']\n"
    (etc / "collector.yaml").write_text(text)
    return etc / "collector.yaml"


def test_example_configs_run_tls_enrol_agent(deployed, tmp_path):
    d = deployed
    port = free_port()
    conf = (d / "mosquitto/mosquitto.conf").read_text().replace("/mosquitto/config/", f"{d}/mosquitto/")
    conf = conf.replace("/mosquitto/data/", f"{tmp_path}/").replace("listener 8883", f"listener {port} 127.0.0.1")
    (tmp_path / "mosquitto.conf").write_text(conf + "user root\nlog_dest stderr\n")
    log = open(tmp_path / "mosquitto.log", "ab")
    mosq = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log)
    procs = [mosq]
    try:
        wait_port(port)
        cfg = _container_etc(d, tmp_path / "etc", port, mosq.pid)
        api = re.search(r"port: (\d+)}", cfg.read_text().split("api:")[1]).group(1)
        with open(tmp_path / "collector.log", "ab") as f:
            procs.append(subprocess.Popen([PY, "-m", "campus_sense", "collector", "--config", str(cfg)], cwd=ROOT,
                                          stdout=f, stderr=f))

        def up():
            assert procs[1].poll() is None, (tmp_path / "collector.log").read_text()[-2000:]
            try:
                return httpx.get(f"http://127.0.0.1:{api}/api/v1/health", timeout=2).json()["ingest"]["connected"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False
        wait_until(up, 60, "example collector.yaml connected to the bootstrap broker over TLS")
        r = subprocess.run([PY, "-m", "campus_sense", "enrol", "bldg-a", "--site", "north", "--building", "A",
                            "-c", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        bundle = tmp_path / "var" / "bundles" / "bldg-a.tar.gz"
        pi = tmp_path / "pi"
        r = subprocess.run([PY, "-m", "campus_sense", "agent", "enrol", str(bundle), "--prefix", str(pi)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        a = pi / "etc/campus-sense/agent.yaml"
        text = a.read_text()
        assert "port: 8883" in text and "tls: {ca_file: ca.crt}" in text and "host: 127.0.0.1" in text
        a.write_text(text.replace("port: 8883", f"port: {port}").replace(
            "devices: []", "publish: {batch_interval_s: 0.3}\ndevices:\n  - {id: a-sw1, driver: synthetic, interval_s: 1}"))
        with open(tmp_path / "agent.log", "ab") as f:
            procs.append(subprocess.Popen([PY, "-m", "campus_sense", "agent", "--config", str(a)], cwd=ROOT,
                                          stdout=f, stderr=f))
        tok = subprocess.run([PY, "-m", "campus_sense", "collector", "token", "create", "--role", "admin",
                              "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True).stdout.strip()

        def delivered():
            assert procs[2].poll() is None, (tmp_path / "agent.log").read_text()[-2000:]
            r = httpx.get(f"http://127.0.0.1:{api}/api/v1/devices", headers={"Authorization": f"Bearer {tok}"},
                          timeout=5)
            return r.status_code == 200 and any(x["id"] == "a-sw1" for x in r.json())
        wait_until(delivered, 60, "the enrolled agent's data over TLS")
        assert oct(os.stat(d / "mosquitto/passwd").st_mode & 0o777) == "0o600"   # kept by enrol
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
