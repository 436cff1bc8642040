"""docker/ is complete: compose.yaml parses (`docker compose config` when the compose CLI is here;
always, structurally with PyYAML: every file it mounts exists after bootstrap.sh, every variable it
uses is in env.example, profiles "metrics" (VictoriaMetrics + Grafana with VM_URL) and "district"
(PostgreSQL, password from a secrets file), neither store published beyond loopback),
bootstrap.sh creates the secrets layout with no default credential, and the example configs work:
the broker config (TLS, ACL, passwd) runs in a real Mosquitto, the example collector.yaml connects
to it over TLS, `campus-sense enrol` with its enrol: block produces a bundle whose agent connects
over TLS with the bootstrap CA and delivers data; with the default store, with its commented
`kind: influxdb` block (a real victoria-metrics started with compose.yaml's flags; /series reads
back through query_url) and with its `kind: postgres` block (a real PostgreSQL initialised as the
postgres image does from secrets/postgres.pass, reached through secrets/collector.dsn).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import peers_pg
from tests.peers_vm import VM_BIN, VictoriaMetrics

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
    made = {f: (d / f).read_bytes() for f in GENERATED}
    r2 = subprocess.run(["bash", str(d / "bootstrap.sh"), "127.0.0.1", "--no-docker"], capture_output=True,
                        text=True, timeout=120)   # idempotent
    assert r2.returncode == 0, r2.stderr
    assert {f: (d / f).read_bytes() for f in GENERATED} == made   # keeps what exists
    return d


# what bootstrap.sh generates (secret, 0600, kept by a second run)
GENERATED = (".env", "secrets/collector-mqtt.pass", "secrets/postgres.pass", "secrets/collector.dsn",
             "mosquitto/passwd", "mosquitto/certs/server.key", "mosquitto/certs/ca.key")


def test_bootstrap_secrets_layout(deployed):
    d = deployed
    assert stat.S_IMODE((d / "secrets").stat().st_mode) == 0o700
    for f in GENERATED:
        assert stat.S_IMODE((d / f).stat().st_mode) & 0o077 == 0, f
    env = dict(ln.split("=", 1) for ln in (d / ".env").read_text().splitlines() if "=" in ln and ln[0] != "#")
    assert env and all(v.strip() for v in env.values()), env          # no empty (default) credential
    assert set(env) == _env_example_vars() and not any("INFLUX" in k for k in env), env
    assert not list((d / "secrets").glob("influx*"))
    pg = (d / "secrets/postgres.pass").read_text().strip()
    assert len(pg) >= 24 and re.fullmatch(r"[A-Za-z0-9]+", pg)        # nothing to percent-encode in the URL
    assert (d / "secrets/collector.dsn").read_text() == f"postgresql://campus:{pg}@postgres:5432/campus\n"
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


def _ports(svc: dict) -> list[tuple[str, str]]:
    """(host ip, container port) of each published port, short or long syntax; "" = all interfaces."""
    out = []
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            out.append((str(p.get("host_ip", "")), str(p["target"])))
            continue
        s = str(p).split("/", 1)[0]
        if s.startswith("["):                                   # [::1]:8428:8428
            ip, _, rest = s[1:].partition("]:")
            out.append((ip, rest.rsplit(":", 1)[-1]))
            continue
        parts = s.split(":")
        out.append((parts[0] if len(parts) == 3 else "", parts[-1]))
    return out


def test_compose_references(deployed):
    d = deployed
    text = (d / "compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{?([A-Za-z_]\w*)", text))
    assert used and used <= _env_example_vars(), used - _env_example_vars()
    assert "influx" not in text.lower().replace("influxdb line protocol", "").replace("kind: influxdb", "")
    data, _ = load_yaml(d / "compose.yaml")
    services = data["services"]
    assert {"mosquitto", "collector", "agent", "victoriametrics", "grafana", "postgres"} <= set(services)
    assert services["agent"]["profiles"] == ["agent"] and services["agent"]["command"][0] == "agent"
    profiles = {n: s.get("profiles") for n, s in services.items()}
    assert profiles["mosquitto"] is None and profiles["collector"] is None          # `docker compose up -d`
    assert profiles["victoriametrics"] == ["metrics"] and profiles["grafana"] == ["metrics"]
    assert profiles["postgres"] == ["district"]
    # district: a second collector with the same image, command and config, its own data volume
    cb, ca = services["collector-b"], services["collector"]
    assert profiles["collector-b"] == ["district"] and cb["image"] == ca["image"] and cb["command"] == ca["command"]
    assert set(cb["volumes"]) - set(ca["volumes"]) == {"collector-b-data:/var/lib/campus-sense"}
    assert _ports(cb) == [("", "8080")] and cb["ports"] == ["8081:8080"]
    b = services["collector"]["build"]
    assert (d / b["context"] / b["dockerfile"]).is_file()
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            host = v.split(":", 1)[0]
            if host.startswith((".", "/")):
                assert (d / host).exists(), f"{name}: {host} does not exist"
            else:
                assert host in data["volumes"], f"{name}: named volume {host} not declared"
        for s in svc.get("secrets", []):
            assert s in data.get("secrets", {}), f"{name}: secret {s} not declared"
        for dep in svc.get("depends_on", []):
            # a dependency in a profile the service is not in would not start with it
            assert set(services[dep].get("profiles") or ()) <= set(svc.get("profiles") or ()), (name, dep)
    for name, sec in data.get("secrets", {}).items():
        assert (d / sec["file"]).is_file(), f"secret {name}: {sec['file']} not created by bootstrap.sh"
    # VictoriaMetrics (no auth) and PostgreSQL: compose network only, at most loopback on the host
    for name, svc in services.items():
        for ip, target in _ports(svc):
            if name in ("victoriametrics", "postgres") or target in ("8428", "5432"):
                assert ip in ("127.0.0.1", "::1"), f"{name} publishes {target} on {ip or '0.0.0.0'}"
        if name in ("victoriametrics", "postgres"):
            assert svc.get("network_mode") != "host", name
    vm = services["victoriametrics"]
    assert re.fullmatch(r"victoriametrics/victoria-metrics:v\d+\.\d+\.\d+", vm["image"]), vm["image"]
    flags = dict(a.lstrip("-").split("=", 1) for a in vm["command"])
    assert flags["dedup.minScrapeInterval"] == "1ms"          # idempotent redelivery (collector/README.md)
    assert re.fullmatch(r"\d+[hdwy]?", flags["retentionPeriod"]), flags
    assert any(v.split(":")[1] == flags["storageDataPath"] for v in vm["volumes"]), "VM data not on a volume"
    gf = services["grafana"]
    assert gf["environment"]["VM_URL"] == "http://victoriametrics:8428"
    assert gf["depends_on"] == ["victoriametrics"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in gf["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "../dashboards/provisioning"
    assert mounts["/var/lib/grafana/dashboards/campus-sense"] == "../dashboards/json"
    ds = (d / "../dashboards/provisioning/datasources/campus-sense.yaml").read_text()
    assert "url: ${VM_URL}" in ds and "type: prometheus" in ds
    pg = services["postgres"]
    assert pg["image"] == "postgres:15" and "POSTGRES_PASSWORD" not in pg["environment"]
    (secret,) = pg["secrets"]
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == f"/run/secrets/{secret}"
    assert data["secrets"][secret]["file"] == "./secrets/postgres.pass"
    assert any(v.endswith(":/var/lib/postgresql/data") and not v.startswith((".", "/")) for v in pg["volumes"])
    env = pg["environment"]
    pw = (d / "secrets/postgres.pass").read_text().strip()
    assert ((d / "secrets/collector.dsn").read_text().strip() ==
            f"postgresql://{env['POSTGRES_USER']}:{pw}@postgres:5432/{env['POSTGRES_DB']}")
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
    r = subprocess.run(["docker", "compose", "--profile", "agent", "--profile", "metrics", "--profile", "district",
                        "config", "--quiet"],
                       cwd=deployed, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _store_examples(text: str) -> dict[str, list[str]]:
    """collector.yaml's commented store blocks, by kind: the `  # key: value` lines from `# kind:` on."""
    blocks: dict[str, list[str]] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"  # (\w+): (\S+)", line)
        if m and m.group(1) == "kind":
            cur = blocks.setdefault(m.group(2), [line])
        elif m and cur is not None:
            cur.append(line)
        else:
            cur = None
    return blocks


def test_collector_yaml_store_examples():
    blocks = _store_examples((DOCKER / "collector.yaml").read_text())
    assert set(blocks) == {"influxdb", "postgres"}, blocks
    keys = {k: {re.match(r"  # (\w+):", ln).group(1): ln.split(": ", 1)[1].split()[0] for ln in v}
            for k, v in blocks.items()}
    assert keys["influxdb"] == {"kind": "influxdb", "url": "http://victoriametrics:8428",
                                "query_url": "http://victoriametrics:8428"}
    assert keys["postgres"] == {"kind": "postgres", "dsn_file": "secrets/collector.dsn",
                                "url": "http://victoriametrics:8428", "query_url": "http://victoriametrics:8428"}


def _container_etc(d: Path, etc: Path, broker_port: int, mosq_pid: int | None, store: dict[str, str] | None = None
                   ) -> Path:
    """The collector container's /etc/campus-sense, as compose.yaml mounts it (host paths). ``store``:
    activate collector.yaml's commented block of that kind, with host names replaced by these URLs/DSN."""
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
    if store:
        for line in _store_examples(text)[store["kind"]]:
            text = text.replace(line + "\n", line.replace("  # ", "  ", 1).replace(
                "http://victoriametrics:8428", store["vm"]) + "\n", 1)
        if "dsn" in store:
            (etc / "secrets").unlink()            # the container's secrets/, with the DSN's host replaced
            shutil.copytree(d / "secrets", etc / "secrets")
            dsn = (etc / "secrets/collector.dsn").read_text()
            assert "@postgres:5432/" in dsn
            (etc / "secrets/collector.dsn").write_text(dsn.replace("@postgres:5432/", store["dsn"]))
    (etc / "collector.yaml").write_text(text)
    return etc / "collector.yaml"


def _compose_vm(d: Path, tmp: Path) -> VictoriaMetrics:
    """A real victoria-metrics with compose.yaml's flags (the data path is a temp dir; queries see the
    last seconds at once instead of after -search.latencyOffset)."""
    if not Path(VM_BIN).exists():
        pytest.skip("victoria-metrics missing (scripts/install.sh --test)")
    data, _ = load_yaml(d / "compose.yaml")
    flags = [a for a in data["services"]["victoriametrics"]["command"] if not a.startswith("-storageDataPath=")]
    return VictoriaMetrics(tmp / "vm", args=(*flags, "-search.latencyOffset=0s", "-search.disableCache")).start()


def _compose_postgres(d: Path) -> peers_pg.Postgres:
    """A real PostgreSQL set up as the postgres:15 image does from compose.yaml's environment: superuser
    POSTGRES_USER with the password in POSTGRES_PASSWORD_FILE (secrets/postgres.pass), database POSTGRES_DB."""
    if not peers_pg.available():
        pytest.skip("PostgreSQL / psycopg missing (scripts/install.sh --test)")
    data, _ = load_yaml(d / "compose.yaml")
    env = data["services"]["postgres"]["environment"]
    p = peers_pg.Postgres()
    p.user = env["POSTGRES_USER"]
    p.password = (d / "secrets/postgres.pass").read_text().rstrip("\n")
    p.start()
    p.create_db(env["POSTGRES_DB"])
    return p


@pytest.mark.parametrize("store", ["sqlite", "metrics", "district"])
def test_example_configs_run_tls_enrol_agent(deployed, tmp_path, store):
    d = deployed
    agent_id, device = {"sqlite": ("bldg-a", "a-sw1"), "metrics": ("bldg-m", "m-sw1"),
                        "district": ("bldg-d", "d-sw1")}[store]
    peers: list = []
    port = free_port()
    conf = (d / "mosquitto/mosquitto.conf").read_text().replace("/mosquitto/config/", f"{d}/mosquitto/")
    port_b = free_port()          # the collectors' listener (partition sessions: client id != user name)
    conf = conf.replace("/mosquitto/data/", f"{tmp_path}/").replace("listener 8883", f"listener {port} 127.0.0.1")
    conf = conf.replace("listener 8884", f"listener {port_b} 127.0.0.1")
    (tmp_path / "mosquitto.conf").write_text(conf + "user root\nlog_dest stderr\n")
    log = open(tmp_path / "mosquitto.log", "ab")
    mosq = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log)
    procs = [mosq]
    try:
        wait_port(port)
        spec = None
        if store != "sqlite":
            peers.append(_compose_vm(d, tmp_path))
            spec = {"kind": "influxdb", "vm": peers[0].url}
        if store == "district":
            peers.append(_compose_postgres(d))
            spec = {"kind": "postgres", "vm": peers[0].url, "dsn": f"@127.0.0.1:{peers[1].port}/"}
        cfg = _container_etc(d, tmp_path / "etc", port_b if store == "district" else port, mosq.pid, spec)
        api = re.search(r"port: (\d+)}", cfg.read_text().split("api:")[1]).group(1)
        cfgs = [cfg]
        if store == "district":   # compose's collector + collector-b: partitions as collector.yaml describes
            (tmp_path / "b").mkdir()
            cfgs.append(_container_etc(d, tmp_path / "b" / "etc", port_b, mosq.pid, spec))
            for c in cfgs:
                example = re.search(r"^# (partitions: .*)$", c.read_text(), re.M).group(1)
                c.write_text(c.read_text() + example.replace("lease_s: 15, refresh_s: 30", "lease_s: 3, refresh_s: 1")
                             + "\n")
        for i, c in enumerate(cfgs):
            with open(tmp_path / f"collector{i}.log", "ab") as f:
                procs.append(subprocess.Popen([PY, "-m", "campus_sense", "collector", "--config", str(c)], cwd=ROOT,
                                              stdout=f, stderr=f))

        def up():
            assert procs[1].poll() is None, (tmp_path / "collector0.log").read_text()[-2000:]
            try:
                return httpx.get(f"http://127.0.0.1:{api}/api/v1/health", timeout=2).json()["ingest"]["connected"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False
        wait_until(up, 60, "example collector.yaml connected to the bootstrap broker over TLS")
        r = subprocess.run([PY, "-m", "campus_sense", "enrol", agent_id, "--site", "north", "--building", "A",
                            "-c", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        bundle = tmp_path / "var" / "bundles" / f"{agent_id}.tar.gz"
        pi = tmp_path / "pi"
        r = subprocess.run([PY, "-m", "campus_sense", "agent", "enrol", str(bundle), "--prefix", str(pi)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        a = pi / "etc/campus-sense/agent.yaml"
        text = a.read_text()
        assert "port: 8883" in text and "tls: {ca_file: ca.crt}" in text and "host: 127.0.0.1" in text
        a.write_text(text.replace("port: 8883", f"port: {port}").replace(
            "devices: []", f"publish: {{batch_interval_s: 0.3}}\ndevices:\n  - {{id: {device}, driver: synthetic, interval_s: 1}}"))
        with open(tmp_path / "agent.log", "ab") as f:
            procs.append(subprocess.Popen([PY, "-m", "campus_sense", "agent", "--config", str(a)], cwd=ROOT,
                                          stdout=f, stderr=f))
        agent_proc = procs[-1]
        tok = subprocess.run([PY, "-m", "campus_sense", "collector", "token", "create", "--role", "admin",
                              "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True).stdout.strip()

        def delivered():
            assert agent_proc.poll() is None, (tmp_path / "agent.log").read_text()[-2000:]
            r = httpx.get(f"http://127.0.0.1:{api}/api/v1/devices", headers={"Authorization": f"Bearer {tok}"},
                          timeout=5)
            return r.status_code == 200 and any(x["id"] == device for x in r.json())
        wait_until(delivered, 60, "the enrolled agent's data over TLS")
        if store != "sqlite":
            # the samples went to victoria-metrics (url) and /series reads them back (query_url)
            now = int(time.time() * 1000)

            def series():
                peers[0].flush()
                r = httpx.get(f"http://127.0.0.1:{api}/api/v1/series", headers={"Authorization": f"Bearer {tok}"},
                              params={"measurement": "interface", "device": device, "field": "in_octets",
                                      "start": now - 600_000, "end": now + 600_000}, timeout=10)
                assert r.status_code == 200, r.text
                return any(s["points"] for s in r.json()["series"])
            wait_until(series, 60, "/series from victoria-metrics")   # PromReader: VM's /api/v1/export
        if store == "district":
            import psycopg
            dsn = (tmp_path / "etc/secrets/collector.dsn").read_text().strip()   # what the collector used
            with psycopg.connect(dsn, connect_timeout=10) as c:       # the state is in PostgreSQL
                assert c.execute("SELECT count(*) FROM devices WHERE id = %s", (device,)).fetchone()[0] == 1

            def holders():          # both collectors hold partitions (leases), via the collector listener
                with psycopg.connect(dsn, connect_timeout=10) as c:
                    return {h for (h,) in c.execute("SELECT holder FROM leases WHERE name LIKE 'partition/%' "
                                                    "AND expires_at > now()")}
            wait_until(lambda: len(holders()) == 2, 30, "compose's two collectors share the partitions")
        assert oct(os.stat(d / "mosquitto/passwd").st_mode & 0o777) == "0o600"   # kept by enrol
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        for peer in reversed(peers):
            peer.cleanup() if isinstance(peer, peers_pg.Postgres) else peer.stop()
