"""Real SNMP notification peers: net-snmp's snmptrap/snmpinform as senders, snmptrapd as an oracle.

``capture(args)`` runs ``snmptrap ARGS`` against a throwaway loopback socket and returns the exact
datagram it sent, so one real trap can be fed to both the driver and snmptrapd.
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.peers import free_port

NET_SNMP_ENV = {"MIBS": "", "MIBDIRS": "/dev/null", "SNMP_PERSISTENT_DIR": tempfile.gettempdir() + "/netsnmp-tests",
                "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}


def have_net_snmp() -> bool:
    return bool(shutil.which("snmptrap") and shutil.which("snmpinform"))


def run(cmd: list[str], timeout: float = 10) -> subprocess.CompletedProcess:
    """Run a net-snmp command line (no MIB loading: numeric OIDs only)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=NET_SNMP_ENV)


def capture(args: list[str], tool: str = "snmptrap") -> bytes:
    """The datagram ``tool ARGS`` sends; ``{target}`` in ARGS is replaced by the capture address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        target = f"127.0.0.1:{s.getsockname()[1]}"
        r = run([tool, "-r", "0", "-t", "0.3"] + [a.replace("{target}", target) for a in args])
        data, _ = s.recvfrom(65535)
        if tool == "snmptrap" and r.returncode != 0:
            raise RuntimeError(f"{tool} failed: {r.stderr}")
        return data


class Snmptrapd:
    """snmptrapd on a free loopback port logging every notification as one parseable line."""

    def __init__(self, conf_lines: list[str], workdir: Path | None = None):
        if not shutil.which("snmptrapd"):
            raise RuntimeError("snmptrapd is not installed (scripts/install.sh --test installs it)")
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="snmptrapd-"))
        self.port = free_port(socket.SOCK_DGRAM)
        self.out = self.dir / "traps.log"
        (self.dir / "snmptrapd.conf").write_text(
            "\n".join(conf_lines) + "\n"
            "format1 V1|%b|%N|%a|%w|%q|%v\\n\n"
            "format2 V2|%b|%v\\n\n"
            "outputOption n\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Snmptrapd":
        env = dict(NET_SNMP_ENV, SNMP_PERSISTENT_DIR=str(self.dir / "persist"))
        self._log = open(self.out, "ab")
        # -On numeric OIDs; -Lf the log; -C only our config; -p no pid file
        self.proc = subprocess.Popen(["snmptrapd", "-f", "-C", "-c", str(self.dir / "snmptrapd.conf"), "-On",
                                      "-Lf", str(self.out), f"udp:127.0.0.1:{self.port}"],
                                     stdout=self._log, stderr=self._log, env=env)
        time.sleep(0.3)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
            self._log.close()

    def send(self, datagram: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(datagram, ("127.0.0.1", self.port))

    def lines(self, n: int, timeout: float = 5) -> list[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = [x for x in self.out.read_text(errors="replace").splitlines() if x.startswith(("V1|", "V2|"))]
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise TimeoutError(f"snmptrapd logged {len(got)} of {n} notifications:\n{self.out.read_text()}")


_VB = re.compile(r"(\.[0-9.]+) = (?:([A-Za-z0-9-]+): )?(.*?)(?=\t\.[0-9]|$)")


def parse_varbinds(text: str) -> list[tuple[str, str, str]]:
    """snmptrapd's %v (tab separated ``.OID = TYPE: value``) -> [(oid, type, value)]."""
    return [(m.group(1).lstrip("."), m.group(2) or "", m.group(3).strip()) for m in _VB.finditer(text)]
