"""`campus-sense enrol`: give a building's agent its identity, on the collector host.

    campus-sense enrol bldg-a --site north --building A -c collector.yaml   # new, or again: new password
    campus-sense enrol bldg-a --revoke -c collector.yaml                   # remove user + ACL, refuse data
    campus-sense enrol --list -c collector.yaml

One enrolment does, in this order:

1. the collector store binds the agent to its site and building (``agent_enrol``; the shared PostgreSQL
   with ``store.kind: postgres``, where a district's collectors learn the site and subscribe to it): its
   messages under any other site/building are dead letters (``agent_moved``), as for an agent that
   was first seen there; a revoked agent's messages are dead letters ``agent_revoked``;
2. the broker's password file gets the user (user name = agent id) with a new random password,
   written with ``mosquitto_passwd`` (the password goes through its standard input, never argv);
3. the broker's ACL file gets one block per agent, in the form of the shipped docker/mosquitto/acl::

       # campus-sense enrol: bldg-a site=north building=A
       user bldg-a
       topic write campus/v1/north/A/bldg-a/#
       # campus-sense enrol end: bldg-a

   (its commit watermark campus/v1/commit/bldg-a is readable through the shipped ``pattern read``);
4. the broker re-reads both files (``enrol.reload_command``, e.g. SIGHUP);
5. one bundle ``<bundle_dir>/<agent>.tar.gz`` (mode 0600) is written: ``agent.yaml`` (skeleton: agent
   id/site/building, mqtt host/port/user/TLS, queue; no devices yet), ``mqtt.pass`` (0600),
   ``ca.crt`` when ``enrol.ca_file`` is set, ``enrol.json``. Copy it to the Pi and run
   ``campus-sense agent enrol BUNDLE`` there.

Settings: the ``enrol:`` block of collector.yaml (:class:`EnrolSettings`, paths relative to
collector.yaml). There is no default password and no anonymous access anywhere.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from campus_sense import wire

BEGIN = "# campus-sense enrol: "
END = "# campus-sense enrol end: "


class EnrolSettings(BaseModel):
    """``enrol:`` in collector.yaml (relative paths: relative to collector.yaml)."""
    model_config = ConfigDict(extra="forbid")

    #: what the agents connect to (the broker's name as the TLS certificate has it)
    broker_host: str = Field(min_length=1)
    #: default 8883 with ``ca_file`` (TLS), 1883 without
    broker_port: int | None = Field(None, ge=1, le=65535)
    #: CA certificate the agents verify the broker with; copied into every bundle. Omit only in a lab
    ca_file: str | None = None
    #: the broker's ``password_file`` and ``acl_file`` (docker/mosquitto/passwd, docker/mosquitto/acl)
    passwd_file: str
    acl_file: str
    #: run after the files changed so the broker re-reads them (Mosquitto: SIGHUP), e.g.
    #: ``systemctl reload mosquitto`` or ``docker compose -f docker/compose.yaml kill -s HUP mosquitto``
    reload_command: str | list[str] | None = None
    #: where bundles are written
    bundle_dir: str = "bundles"
    #: agent.yaml ``queue.path`` in the bundle (the agent's StateDirectory)
    queue_path: str = "/var/lib/campus-sense/agent-queue.db"
    #: random bytes per password (URL-safe base64 in the file)
    password_bytes: int = Field(24, ge=16, le=64)

    def resolve(self, base: Path) -> "EnrolSettings":
        def fix(p: str | None) -> str | None:
            return p if p is None or Path(p).is_absolute() else str(base / p)
        self.ca_file = fix(self.ca_file)
        self.passwd_file = fix(self.passwd_file)  # type: ignore[assignment]
        self.acl_file = fix(self.acl_file)  # type: ignore[assignment]
        self.bundle_dir = fix(self.bundle_dir)  # type: ignore[assignment]
        return self

    @property
    def port(self) -> int:
        return self.broker_port or (8883 if self.ca_file else 1883)


class EnrolError(Exception):
    pass


# ----------------------------------------------------------------------------- broker files

def passwd_set(passwd_file: str | Path, user: str, password: str) -> None:
    """Add or replace ``user`` in a Mosquitto password file (hashed by mosquitto_passwd)."""
    f = Path(passwd_file)
    if not f.exists():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.touch(mode=0o600)
    st = f.stat()
    r = subprocess.run(["mosquitto_passwd", str(f), user], input=f"{password}\n{password}\n", text=True,
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        raise EnrolError(f"mosquitto_passwd {f} {user}: {(r.stderr or r.stdout).strip()}")
    _keep_owner(f, st)


def _keep_owner(f: Path, st: os.stat_result) -> None:
    """The broker (e.g. uid 1883 in the eclipse-mosquitto image) must still read the file."""
    try:
        os.chmod(f, st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(f, st.st_uid, st.st_gid)
    except OSError:
        pass


def passwd_users(passwd_file: str | Path) -> set[str]:
    try:
        text = Path(passwd_file).read_text()
    except FileNotFoundError:
        return set()
    return {ln.split(":", 1)[0] for ln in text.splitlines() if ":" in ln and not ln.startswith("#")}


def passwd_delete(passwd_file: str | Path, user: str) -> bool:
    if user not in passwd_users(passwd_file):
        return False
    st = Path(passwd_file).stat()
    r = subprocess.run(["mosquitto_passwd", "-D", str(passwd_file), user], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise EnrolError(f"mosquitto_passwd -D {passwd_file} {user}: {(r.stderr or r.stdout).strip()}")
    _keep_owner(Path(passwd_file), st)
    return True


def acl_block(agent: str, site: str, building: str) -> str:
    return (f"{BEGIN}{agent} site={site} building={building}\n"
            f"user {agent}\n"
            f"topic write campus/v1/{site}/{building}/{agent}/#\n"
            f"{END}{agent}\n")


def acl_remove(text: str, agent: str) -> tuple[str, bool]:
    """``text`` without the enrol block of ``agent``."""
    out, skip, found = [], False, False
    for ln in text.splitlines(keepends=True):
        if ln.startswith(BEGIN) and ln[len(BEGIN):].split(" ")[0].strip() == agent:
            skip = found = True
            continue
        if skip:
            if ln.startswith(END):
                skip = False
            continue
        out.append(ln)
    return "".join(out), found


def acl_entries(text: str) -> dict[str, tuple[str, str]]:
    """agent -> (site, building) of the enrol blocks in an ACL file."""
    out = {}
    for ln in text.splitlines():
        if ln.startswith(BEGIN):
            parts = ln[len(BEGIN):].split()
            kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            out[parts[0]] = (kv.get("site", ""), kv.get("building", ""))
    return out


def acl_set(acl_file: str | Path, agent: str, site: str, building: str) -> None:
    f = Path(acl_file)
    text = f.read_text() if f.exists() else ""
    if re.search(r"^\s*pattern\s+write\s+campus/v1/\+/\+/%u/#", text, re.M):
        print(f"campus-sense enrol: warning: {f} still has 'pattern write campus/v1/+/+/%u/#': every agent may "
              f"then write under any site/building; remove it (the enrol blocks grant each agent its own subtree)",
              file=sys.stderr)
    text, _ = acl_remove(text, agent)
    if text and not text.endswith("\n"):
        text += "\n"
    _write_atomic(f, text + acl_block(agent, site, building))


def _write_atomic(f: Path, text: str, mode: int | None = None) -> None:
    f.parent.mkdir(parents=True, exist_ok=True)
    st = f.stat() if f.exists() else None
    fd, tmp = tempfile.mkstemp(dir=f.parent, prefix=f".{f.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode if mode is not None else (st.st_mode & 0o7777 if st else 0o644))
        if st is not None and os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, f)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reload_broker(cmd: str | list[str] | None) -> str:
    if not cmd:
        return "no enrol.reload_command: make the broker re-read its files now (Mosquitto: SIGHUP, " \
               "e.g. systemctl reload mosquitto)"
    argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise EnrolError(f"reload_command {' '.join(argv)} failed ({r.returncode}): {(r.stderr or r.stdout).strip()}")
    return f"broker reloaded ({' '.join(argv)})"


# ----------------------------------------------------------------------------- bundle

def agent_yaml(agent: str, site: str, building: str, s: EnrolSettings, created: str) -> str:
    tls = "  tls: {ca_file: ca.crt}\n" if s.ca_file else \
        "  # no TLS: enrol.ca_file is not set on the collector host (lab only)\n"
    return (f"# campus-sense agent {agent} (site {site}, building {building}), enrolled {created}.\n"
            "# Paths are relative to this file's folder. Add devices: campus-sense discover CIDR ... "
            "--output agent.yaml\n"
            f"agent: {{id: {agent}, site: {site}, building: {building}}}\n"
            "mqtt:\n"
            f"  host: {s.broker_host}\n"
            f"  port: {s.port}\n"
            f"  username: {agent}\n"
            "  password_file: mqtt.pass\n"
            + tls +
            f"queue: {{path: {s.queue_path}}}\n"
            "devices: []\n")


def write_bundle(path: Path, agent: str, site: str, building: str, password: str, s: EnrolSettings) -> Path:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    files: dict[str, tuple[bytes, int]] = {
        "agent.yaml": (agent_yaml(agent, site, building, s, created).encode(), 0o644),
        "mqtt.pass": (password.encode() + b"\n", 0o600),
        "enrol.json": (json.dumps({"agent": agent, "site": site, "building": building, "created": created,
                                   "broker": {"host": s.broker_host, "port": s.port, "tls": bool(s.ca_file)}},
                                  indent=2).encode() + b"\n", 0o644),
    }
    if s.ca_file:
        try:
            files["ca.crt"] = (Path(s.ca_file).read_bytes(), 0o644)
        except OSError as e:
            raise EnrolError(f"enrol.ca_file {s.ca_file}: {e.strerror}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    top = f"campus-sense-{agent}"
    fd = os.open(path.with_name(path.name + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w:gz") as tar:
        d = tarfile.TarInfo(top)
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
        tar.addfile(d)
        for name, (data, mode) in files.items():
            ti = tarfile.TarInfo(f"{top}/{name}")
            ti.size, ti.mode, ti.mtime = len(data), mode, int(time.time())
            tar.addfile(ti, io.BytesIO(data))
    os.replace(path.with_name(path.name + ".tmp"), path)
    os.chmod(path, 0o600)
    return path


# ----------------------------------------------------------------------------- operations

def enrol(store, s: EnrolSettings, agent: str, site: str, building: str, move: bool = False,
          output: Path | None = None) -> tuple[Path, list[str]]:
    """Create (or renew) an agent identity; -> (bundle path, messages)."""
    for v, what in ((agent, "agent id"), (site, "site"), (building, "building")):
        try:
            wire.check_segment(v, what)
        except wire.WireError as e:
            raise EnrolError(str(e)) from None
    if agent == "collector" or agent.startswith("$"):
        raise EnrolError(f"{agent!r} is reserved")
    msgs: list[str] = []
    prev = store.agent_binding(agent)
    if prev and prev.get("site") and (prev["site"], prev["building"]) != (site, building) and not move:
        raise EnrolError(f"agent {agent} is bound to site {prev['site']} building {prev['building']}; "
                         f"add --move if it really moved to {site}/{building}")
    password = secrets.token_urlsafe(s.password_bytes)
    store.agent_enrol(agent, site, building)
    renewed = agent in passwd_users(s.passwd_file)
    passwd_set(s.passwd_file, agent, password)
    acl_set(s.acl_file, agent, site, building)
    msgs.append(reload_broker(s.reload_command))
    out = output or Path(s.bundle_dir) / f"{agent}.tar.gz"
    write_bundle(out, agent, site, building, password, s)
    msgs.insert(0, f"agent {agent} {'re-enrolled (new password; the old one no longer works)' if renewed else 'enrolled'}"
                   f": site {site}, building {building}")
    msgs.append(f"bundle {out} (mode 0600, holds the password): copy it to the agent and run "
                f"'campus-sense agent enrol {out.name}' there, then delete it here")
    return out, msgs


def revoke(store, s: EnrolSettings, agent: str) -> list[str]:
    msgs = []
    known = store.agent_revoke(agent)
    had_user = passwd_delete(s.passwd_file, agent)
    f = Path(s.acl_file)
    had_acl = False
    if f.exists():
        text, had_acl = acl_remove(f.read_text(), agent)
        if had_acl:
            _write_atomic(f, text)
    if not (known or had_user or had_acl):
        raise EnrolError(f"no agent {agent!r} (not in the store, {s.passwd_file} or {s.acl_file})")
    msgs.append(reload_broker(s.reload_command))
    msgs.insert(0, f"agent {agent} revoked: broker user {'removed' if had_user else 'was absent'}, ACL block "
                   f"{'removed' if had_acl else 'was absent'}, its data is refused from now on")
    return msgs


# ----------------------------------------------------------------------------- CLI

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("agent_id", nargs="?", help="agent id = MQTT user name (e.g. bldg-a)")
    parser.add_argument("--config", "-c", required=True, help="collector.yaml (with an enrol: block)")
    parser.add_argument("--site", help="site the agent belongs to")
    parser.add_argument("--building", help="building the agent belongs to")
    parser.add_argument("--move", action="store_true", help="re-enrol under another site/building")
    parser.add_argument("--output", "-o", type=Path, help="bundle path (default <enrol.bundle_dir>/<agent>.tar.gz)")
    parser.add_argument("--revoke", action="store_true", help="remove the broker user and ACL block, refuse its data")
    parser.add_argument("--list", action="store_true", help="list enrolled agents")


def run(args: argparse.Namespace) -> int:
    from campus_sense.yamlconf import ConfigError
    from collector import config as cfgmod
    from collector.main import open_admin_store
    try:
        cfg = cfgmod.load(args.config)
    except ConfigError as e:
        print(f"campus-sense enrol: {e}", file=sys.stderr)
        return 2
    s: EnrolSettings | None = getattr(cfg, "enrol", None)
    if s is None:
        print(f"campus-sense enrol: {args.config}: no enrol: block (broker_host, passwd_file, acl_file, ...; "
              "see collector/README.md 'Enrolment')", file=sys.stderr)
        return 2
    s.resolve(Path(args.config).resolve().parent)
    if not args.list and not args.agent_id:
        print("campus-sense enrol: an agent id is required (or --list)", file=sys.stderr)
        return 2
    store = open_admin_store(cfg)      # district: the shared PostgreSQL (the partitions learn the site there)
    try:
        if args.list:
            acl = acl_entries(Path(s.acl_file).read_text()) if Path(s.acl_file).exists() else {}
            users = passwd_users(s.passwd_file)
            for a in sorted(set(acl) | {u for u in users if u != "collector"}):
                b = store.agent_binding(a) or {}
                state = "revoked" if b.get("revoked_ms") else ("ok" if a in users and a in acl else "incomplete")
                site, bld = acl.get(a, (b.get("site"), b.get("building")))
                seen = "never seen" if not b.get("last_seen_ms") else time.strftime(
                    "last seen %Y-%m-%dT%H:%M:%SZ", time.gmtime(b["last_seen_ms"] / 1000))
                print(f"{a}\t{site}\t{bld}\t{state}\t{seen}")
            return 0
        if args.revoke:
            msgs = revoke(store, s, args.agent_id)
        else:
            if not args.site or not args.building:
                b = store.agent_binding(args.agent_id)
                if not b or not b.get("site"):
                    print("campus-sense enrol: --site and --building are required for a new agent", file=sys.stderr)
                    return 2
                args.site, args.building = args.site or b["site"], args.building or b["building"]
            _, msgs = enrol(store, s, args.agent_id, args.site, args.building, move=args.move, output=args.output)
    except EnrolError as e:
        print(f"campus-sense enrol: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    for m in msgs:
        print(m, file=sys.stderr)
    return 0
