"""Real SNMP peers for tests: net-snmp ``snmpd`` and Debian's ``snmpsimd`` on loopback.

Both bind a free UDP port on 127.0.0.1 with random credentials; ``stop()`` kills them.
Also :func:`bulkwalk`, a net-snmp ``snmpbulkwalk -On -Ob`` wrapper used as the oracle.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.peers import free_port

FIXTURES = Path(__file__).parent / "fixtures" / "snmprec"


def _wait_snmp(port: int, community: str, timeout: float = 15.0, proc: subprocess.Popen | None = None,
               context: str | None = None) -> None:
    """Poll sysObjectID (or any first OID) with snmpget until the agent answers."""
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"SNMP peer exited with {proc.returncode}")
        r = subprocess.run(["snmpgetnext", "-v2c", "-c", community, "-On", "-t", "0.3", "-r", "0",
                            f"127.0.0.1:{port}", "1.3.6.1.2.1.1"],
                           capture_output=True, text=True, env=_nosnmp_env())
        if r.returncode == 0 and r.stdout.strip():
            return
        last = r.stderr.strip()
        time.sleep(0.1)
    raise TimeoutError(f"SNMP agent on 127.0.0.1:{port} not answering after {timeout}s ({last})")


def _nosnmp_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MIBS"] = ""          # no MIB loading: faster, no warnings
    env["MIBDIRS"] = ""
    env["SNMPCONFPATH"] = "/nonexistent"  # ignore any snmp.conf on the machine
    return env


class Snmpd:
    """net-snmp snmpd with a random read-only community and a v3 authPriv user."""

    def __init__(self, workdir: Path | None = None, port: int | None = None,
                 auth_protocol: str = "SHA-256", priv_protocol: str = "AES"):
        if not shutil.which("snmpd"):
            raise RuntimeError("snmpd is not installed (apt-get install snmpd)")
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="snmpd-"))
        self.port = port or free_port(socket.SOCK_DGRAM)
        self.community = "c-" + secrets.token_hex(6)
        self.user = "mon" + secrets.token_hex(3)
        self.auth_protocol = auth_protocol
        self.priv_protocol = priv_protocol
        self.auth_key = "a-" + secrets.token_hex(8)
        self.priv_key = "p-" + secrets.token_hex(8)
        self.proc: subprocess.Popen | None = None
        (self.dir / "persist").mkdir(exist_ok=True)
        self.conf = self.dir / "snmpd.conf"
        self.conf.write_text(
            f"agentAddress udp:127.0.0.1:{self.port}\n"
            f"rocommunity {self.community} 127.0.0.1\n"
            f"createUser {self.user} {auth_protocol} {self.auth_key} {priv_protocol} {self.priv_key}\n"
            f"rouser {self.user} priv\n"
            "sysLocation campus-sense test rack\n"
            "sysContact noc@example.invalid\n"
            f"sysName snmpd-test-{self.port}\n"
            "dontLogTCPWrappersConnects yes\n"
        )

    def start(self) -> "Snmpd":
        env = _nosnmp_env()
        env["SNMP_PERSISTENT_DIR"] = str(self.dir / "persist")
        self.log = open(self.dir / "snmpd.log", "ab")
        self.proc = subprocess.Popen(
            ["snmpd", "-f", "-Lo", "-C", "-c", str(self.conf), "-p", str(self.dir / "snmpd.pid")],
            stdout=self.log, stderr=self.log, env=env)
        _wait_snmp(self.port, self.community, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Snmpsim:
    """Debian's snmpsimd serving ``.snmprec`` recordings; the community of each recording is
    its file name without extension (snmpsim's rule), so copy recordings under random names."""

    def __init__(self, recordings: dict[str, Path], port: int | None = None, v3: dict[str, str] | None = None):
        """``recordings``: community -> .snmprec path. ``v3``: one USM user, keys user, auth_proto,
        auth_key, priv_proto, priv_key (snmpsimd spellings, e.g. SHA / AES); the v3 context name
        of a recording is its community."""
        if not shutil.which("snmpsimd"):
            raise RuntimeError("snmpsimd is not installed (apt-get install snmpsim)")
        # snmpsimd refuses to run as root unless it drops privileges to nobody, so its
        # data and cache dirs must be readable/writable by nobody (not under /root).
        self.dir = Path(tempfile.mkdtemp(prefix="snmpsim-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.data = self.dir / "data"
        self.cache = self.dir / "cache"
        self.data.mkdir()
        self.cache.mkdir()
        for community, path in recordings.items():
            shutil.copyfile(path, self.data / f"{community}.snmprec")
        for p in [self.data, self.cache, *self.data.iterdir()]:
            os.chmod(p, 0o777 if p.is_dir() else 0o644)
        self.port = port or free_port(socket.SOCK_DGRAM)
        self.communities = list(recordings)
        self.v3 = v3
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Snmpsim":
        args = ["snmpsimd", f"--data-dir={self.data}", f"--cache-dir={self.cache}",
                f"--agent-udpv4-endpoint=127.0.0.1:{self.port}", "--logging-method=null"]
        if self.v3:
            args += [f"--v3-{k.replace('_', '-')}={v}" for k, v in self.v3.items()]
        else:
            args.append("--v2c-arch")
        if os.geteuid() == 0:
            args += ["--process-user=nobody", "--process-group=nogroup"]
        self.log = open(self.dir / "snmpsimd.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, cwd=self.dir)
        _wait_snmp(self.port, self.communities[0], timeout=30, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- oracle

_LINE = re.compile(r"^\.?([0-9.]+) = (?:([A-Za-z0-9-]+): ?)?(.*)$")


def bulkwalk(port: int, community: str, oid: str, *extra: str) -> dict[str, tuple[str, str]]:
    """``snmpbulkwalk -v2c -On -Ob -Oe -Ox?`` -> {numeric oid: (type, raw value text)}."""
    r = subprocess.run(["snmpbulkwalk", "-v2c", "-c", community, "-On", "-Ob", "-Oe", "-t", "2", "-r", "1",
                        *extra, f"127.0.0.1:{port}", oid],
                       capture_output=True, text=True, env=_nosnmp_env(), timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"snmpbulkwalk failed: {r.stderr.strip()}")
    out: dict[str, tuple[str, str]] = {}
    last = None
    for line in r.stdout.splitlines():
        if line.startswith(("No more variables left", "End of MIB")):
            continue
        m = _LINE.match(line)
        if m and m.group(3).startswith(("No more variables left", "No Such Object", "No Such Instance")):
            continue   # endOfMibView / noSuch* exceptions (snmpsim repeats the last OID with them)
        if m:
            last = m.group(1)
            out[last] = (m.group(2) or "", m.group(3))
        elif last is not None:  # multi-line string continuation
            t, v = out[last]
            out[last] = (t, v + "\n" + line)
    return out


def column(port: int, community: str, oid: str, conv=str) -> dict:
    """Oracle for one table column: {index suffix: conv(value text)} from snmpbulkwalk."""
    return {k[len(oid) + 1:]: conv(v[1]) for k, v in bulkwalk(port, community, oid).items()
            if k.startswith(oid + ".")}


async def collect_from_sim(port: int, community: str, sections=None, soid: str | None = None, **kw) -> dict:
    """drivers.snmp.tables.collect_sections() on one snmpsim community over the fast v2c client,
    the profile chosen by the recording's own sysObjectID/sysDescr unless ``soid`` is given."""
    from drivers.snmp.fastv2c import FastV2cSession
    from drivers.snmp.tables import collect_sections
    s = FastV2cSession("127.0.0.1", port, community, timeout=5.0, retries=2)
    try:
        sysg = await s.get(["1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0"])
        return await collect_sections(s, soid or sysg.get("1.3.6.1.2.1.1.2.0"),
                                      list(sections) if sections is not None else None,
                                      sys_descr=sysg.get("1.3.6.1.2.1.1.1.0"), **kw)
    finally:
        await s.close()


def oracle_interfaces(port: int, community: str) -> dict[int, dict]:
    """What net-snmp reads from the agent, reduced to the snmp-inventory --json interface keys."""
    def column(oid: str, *extra: str) -> dict[int, tuple[str, str]]:
        return {int(k[len(oid) + 1:]): v for k, v in bulkwalk(port, community, oid, *extra).items()
                if k.startswith(oid + ".") and k[len(oid) + 1:].isdigit()}

    descr = column("1.3.6.1.2.1.2.2.1.2", "-Ox")    # hex, decoded like the client does
    types = column("1.3.6.1.2.1.2.2.1.3")
    speed = column("1.3.6.1.2.1.2.2.1.5")
    phys = column("1.3.6.1.2.1.2.2.1.6", "-Ox")
    admin = column("1.3.6.1.2.1.2.2.1.7")
    oper = column("1.3.6.1.2.1.2.2.1.8")
    names = column("1.3.6.1.2.1.31.1.1.1.1", "-Ox")
    high = column("1.3.6.1.2.1.31.1.1.1.15")
    alias = column("1.3.6.1.2.1.31.1.1.1.18", "-Ox")

    def hexbytes(v: tuple[str, str] | None) -> bytes | None:
        if v is None:
            return None
        t, s = v
        s = s.strip().strip('"')
        if t.lower() in ("hex-string", "hex"):
            return bytes.fromhex(re.sub(r"\s+", "", s))
        return s.encode("latin-1")

    out: dict[int, dict] = {}
    for idx in sorted(set(descr) | set(types) | set(oper)):
        def num(col, default=None):
            v = col.get(idx)
            return int(re.sub(r"[^0-9-]", "", v[1].split()[0])) if v is not None else default
        hs = num(high)
        sp = num(speed)
        if hs:
            mbps = hs
        elif sp is not None:
            mbps = sp / 1_000_000
        else:
            mbps = 0 if hs is not None else None
        mac = hexbytes(phys.get(idx))
        out[idx] = {
            "descr": hexbytes(descr.get(idx)),
            "name": hexbytes(names.get(idx)),
            "alias": hexbytes(alias.get(idx)),
            "type": num(types),
            "speed_mbps": mbps,
            "ifSpeed": sp,
            "ifHighSpeed": hs,
            "mac": ":".join(f"{b:02x}" for b in mac) if mac and len(mac) == 6 and any(mac) else None,
            "admin_up": num(admin) == 1 if idx in admin else None,
            "oper_up": num(oper) == 1 if idx in oper else None,
        }
    return out
