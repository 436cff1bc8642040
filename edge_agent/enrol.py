"""`campus-sense agent enrol BUNDLE`: install an enrolment bundle (from `campus-sense enrol`) on the agent.

    campus-sense agent enrol bldg-a.tar.gz                 # -> /etc/campus-sense, /var/lib/campus-sense
    campus-sense agent enrol bldg-a.tar.gz --prefix /tmp/x # -> /tmp/x/etc/campus-sense, /tmp/x/var/lib/...

Writes ``agent.yaml`` (only when there is none: an existing one of the same agent keeps its devices),
``mqtt.pass`` (0600, owned by the service user when run as root), ``ca.crt``; creates the state
directory for the queue. A bundle of another agent than the installed agent.yaml is refused
(``--force`` replaces agent.yaml). Re-enrolment (a new bundle of the same agent) only replaces the
password file and CA. Ends with ``agent --check`` of the result.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import tarfile
from pathlib import Path

ALLOWED = {"agent.yaml", "mqtt.pass", "ca.crt", "enrol.json"}


class BundleError(Exception):
    pass


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle from `campus-sense enrol` (.tar.gz or its folder)")
    parser.add_argument("--prefix", type=Path, help="install under this root (PREFIX/etc/campus-sense, "
                                                    "PREFIX/var/lib/campus-sense)")
    parser.add_argument("--config-dir", type=Path, help="default /etc/campus-sense")
    parser.add_argument("--state-dir", type=Path, help="queue folder, default /var/lib/campus-sense")
    parser.add_argument("--user", default="campus-sense",
                        help="service user owning mqtt.pass and the state dir (when run as root and it exists)")
    parser.add_argument("--force", action="store_true", help="replace an agent.yaml of another agent")


def read_bundle(path: Path) -> dict[str, bytes]:
    """name -> content of a bundle (tar.gz or folder); only the known file names, no links."""
    files: dict[str, bytes] = {}
    if path.is_dir():
        for name in ALLOWED:
            f = path / name
            if f.is_file() and not f.is_symlink():
                files[name] = f.read_bytes()
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for m in tar.getmembers():
                    parts = Path(m.name).parts
                    if m.isdir():
                        continue
                    if not m.isfile() or m.name.startswith("/") or ".." in parts or len(parts) > 2 \
                            or parts[-1] not in ALLOWED:
                        raise BundleError(f"{path}: unexpected member {m.name!r}")
                    fh = tar.extractfile(m)
                    files[parts[-1]] = fh.read() if fh else b""
        except (tarfile.TarError, OSError) as e:
            raise BundleError(f"{path}: not a readable bundle ({e})") from None
    for need in ("agent.yaml", "mqtt.pass", "enrol.json"):
        if need not in files:
            raise BundleError(f"{path}: {need} missing (not a campus-sense enrol bundle?)")
    return files


def _write(f: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    tmp = f.with_name(f".{f.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, f)


def install(bundle: Path, config_dir: Path, state_dir: Path, user: str | None = "campus-sense",
            force: bool = False) -> list[str]:
    from campus_sense.yamlconf import ConfigError, load_yaml
    files = read_bundle(bundle)
    meta = json.loads(files["enrol.json"])
    agent = meta["agent"]
    owner = None
    if user and os.geteuid() == 0:
        try:
            pw = pwd.getpwnam(user)
            owner = (pw.pw_uid, pw.pw_gid)
        except KeyError:
            pass
    msgs: list[str] = []
    config_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    if owner:
        os.chown(state_dir, *owner)
    cfg = config_dir / "agent.yaml"
    write_cfg = True
    if cfg.exists():
        try:
            data, _ = load_yaml(cfg)
            have = ((data or {}).get("agent") or {}).get("id")
        except ConfigError:
            have = None
        if have == agent:
            write_cfg = False
            msgs.append(f"{cfg}: agent {agent} already installed: kept (devices stay); new password and CA")
        elif not force:
            raise BundleError(f"{cfg} belongs to agent {have!r}, the bundle to {agent!r}; --force replaces it")
        else:
            cfg.replace(cfg.with_name("agent.yaml.bak"))
            msgs.append(f"{cfg}: the old file (agent {have!r}) is now agent.yaml.bak")
    if write_cfg:
        text = files["agent.yaml"].decode()
        lines = [f"queue: {{path: {state_dir / 'agent-queue.db'}}}" if ln.startswith("queue:") else ln
                 for ln in text.splitlines()]
        _write(cfg, ("\n".join(lines) + "\n").encode(), 0o644)
        msgs.append(f"{cfg}: written (agent {agent}, site {meta['site']}, building {meta['building']}, no devices)")
    _write(config_dir / "mqtt.pass", files["mqtt.pass"], 0o600, owner)
    if "ca.crt" in files:
        _write(config_dir / "ca.crt", files["ca.crt"], 0o644)
    msgs.append(f"{config_dir / 'mqtt.pass'}: mode 0600{' owned by ' + user if owner else ''}")
    return msgs


def run(args: argparse.Namespace) -> int:
    from campus_sense.yamlconf import ConfigError
    from edge_agent import config as cfgmod
    root = args.prefix or Path("/")
    config_dir = args.config_dir or root / "etc/campus-sense"
    state_dir = args.state_dir or root / "var/lib/campus-sense"
    try:
        msgs = install(args.bundle, config_dir, state_dir, args.user, args.force)
    except (BundleError, OSError, ValueError, KeyError) as e:
        print(f"campus-sense agent enrol: {e}", file=sys.stderr)
        return 1
    for m in msgs:
        print(m, file=sys.stderr)
    try:
        loaded = cfgmod.load(config_dir / "agent.yaml")
    except ConfigError as e:
        print(f"campus-sense agent enrol: installed, but the config does not validate:\n{e}", file=sys.stderr)
        return 2
    print(f"{loaded.path}: ok (agent {loaded.model.agent.id}, {len(loaded.model.devices)} devices). Next: "
          f"campus-sense discover <CIDR> ... --output {loaded.path}; then "
          "systemctl enable --now campus-sense-agent", file=sys.stderr)
    return 0
