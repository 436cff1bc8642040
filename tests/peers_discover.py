"""Peers for discovery tests, each on its own loopback address 127.0.1.x (the sweep scope):
snmpsimd per device (Debian's snmpsim, recordings from tests/fixtures/snmprec*, with sysName /
sysLocation / LLDP rows set for the test building), the spec-built WS-Discovery responder
(tests/wsd_responder.py) in front of the ONVIF device simulator (tests/onvif_sim.py), the PJLink
projector simulator (tests/pjlink_sim.py), and a sentinel that counts anything sent to an address
outside the scope.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

from tests.onvif_sim import OnvifSim
from tests.peers_snmp import Snmpsim, _nosnmp_env
from tests.pjlink_sim import PJLinkSim

FIX = Path(__file__).parent / "fixtures"


def _oid_key(line: str) -> tuple[int, ...]:
    return tuple(int(x) for x in line.split("|", 1)[0].strip().lstrip(".").split("."))


def derive_recording(src: Path, dst: Path, name: str | None = None, location: str | None = None,
                     extra: list[str] = ()) -> Path:
    """A copy of a recording with sysName/sysLocation set and extra ``oid|type|value`` lines, sorted."""
    rows: dict[tuple, str] = {}
    for ln in src.read_text().splitlines():
        if ln.strip() and not ln.startswith("#"):
            rows[_oid_key(ln)] = ln
    if name is not None:
        rows[_oid_key("1.3.6.1.2.1.1.5.0|")] = f"1.3.6.1.2.1.1.5.0|4|{name}"
    if location is not None:
        rows[_oid_key("1.3.6.1.2.1.1.6.0|")] = f"1.3.6.1.2.1.1.6.0|4|{location}"
    for ln in extra:
        rows[_oid_key(ln)] = ln
    dst.write_text("\n".join(rows[k] for k in sorted(rows)) + "\n")
    return dst


def lldp_lines(local_port: int, rem: int, chassis_mac: str, port_id: str, sys_name: str, sys_descr: str,
               mgmt_ip: str | None, time_mark: int = 0) -> list[str]:
    """lldpRemTable columns 4-10 and an lldpRemManAddrTable row (IPv4) for one neighbour."""
    i = f"{time_mark}.{local_port}.{rem}"
    base = "1.0.8802.1.1.2.1.4.1.1"
    out = [f"{base}.4.{i}|2|4", f"{base}.5.{i}|4x|{chassis_mac.replace(':', '')}", f"{base}.6.{i}|2|5",
           f"{base}.7.{i}|4|{port_id}", f"{base}.8.{i}|4|{port_id}", f"{base}.9.{i}|4|{sys_name}",
           f"{base}.10.{i}|4|{sys_descr}"]
    if mgmt_ip:
        out.append(f"1.0.8802.1.1.2.1.4.2.1.3.{i}.1.4.{mgmt_ip}|2|2")
    return out


def cdp_lines(if_index: int, device_index: int, device_id: str, device_port: str, platform: str,
              version: str, address: str | None, capabilities: int = 0x29) -> list[str]:
    """One cdpCacheEntry (CISCO-CDP-MIB) as a Catalyst returns it (cf. the 11048.8 row of
    snmprec_vendors/cisco_c3750.snmprec): index ifIndex.deviceIndex, strings as OCTET STRING,
    cdpCacheAddress the 4 address octets with cdpCacheAddressType ip(1)."""
    i = f"{if_index}.{device_index}"
    base = "1.3.6.1.4.1.9.9.23.1.2.1.1"
    hx = lambda s: s.encode().hex()   # noqa: E731
    out = [f"{base}.5.{i}|4x|{hx(version)}", f"{base}.6.{i}|4x|{hx(device_id)}",
           f"{base}.7.{i}|4x|{hx(device_port)}", f"{base}.8.{i}|4x|{hx(platform)}",
           f"{base}.9.{i}|4x|{capabilities:08x}", f"{base}.10.{i}|4|", f"{base}.11.{i}|2|1",
           f"{base}.12.{i}|2|3", f"{base}.24.{i}|67|2677086091"]
    if address:
        out += [f"{base}.3.{i}|2|1", f"{base}.4.{i}|4x|{bytes(map(int, address.split('.'))).hex()}"]
    return out


class SnmpsimAt(Snmpsim):
    """snmpsimd bound to ``host:port`` (one device per loopback address)."""

    def __init__(self, recordings: dict[str, Path], host: str, port: int, v3: dict[str, str] | None = None):
        super().__init__(recordings, port=port, v3=v3)
        self.host = host

    def start(self) -> "SnmpsimAt":
        args = ["snmpsimd", f"--data-dir={self.data}", f"--cache-dir={self.cache}",
                f"--agent-udpv4-endpoint={self.host}:{self.port}", "--logging-method=null"]
        if self.v3:
            args += [f"--v3-{k.replace('_', '-')}={v}" for k, v in self.v3.items()]
        else:
            args.append("--v2c-arch")
        if os.geteuid() == 0:
            args += ["--process-user=nobody", "--process-group=nogroup"]
        self.log = open(self.dir / "snmpsimd.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, cwd=self.dir)
        return self

    def wait(self, timeout: float = 40.0) -> None:
        end = time.monotonic() + timeout
        community = self.communities[0]
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"snmpsimd on {self.host} exited: {(self.dir / 'snmpsimd.log').read_text()[-500:]}")
            r = subprocess.run(["snmpget", "-v2c", "-c", community, "-On", "-t", "0.5", "-r", "0",
                                f"{self.host}:{self.port}", "1.3.6.1.2.1.1.2.0"], capture_output=True, text=True,
                               env=_nosnmp_env())
            if r.returncode == 0 and r.stdout.strip():
                return
            time.sleep(0.2)
        raise TimeoutError(f"snmpsimd on {self.host}:{self.port} not answering")


class OnvifSimAt(OnvifSim):
    """The ONVIF device simulator listening on ``host``."""

    def start_at(self, host: str) -> "OnvifSimAt":
        """OnvifSim.start, bound to ``host`` instead of 127.0.0.1 (same handler)."""
        from http.server import BaseHTTPRequestHandler
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload, ctype = sim._handle(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.host = host
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"


class PJLinkAt:
    """tests/pjlink_sim.PJLinkSim on its own event loop thread, bound to ``host:port``."""

    def __init__(self, host: str, port: int = 4352, **kw):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.sim = PJLinkSim(**kw)
        asyncio.run_coroutine_threadsafe(self.sim.start(host, port), self.loop).result(10)
        self.port = self.sim.port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


class Sentinel:
    """Listens on an address outside the scope (UDP and TCP ports) and counts what arrives."""

    def __init__(self, host: str, udp_ports: list[int], tcp_ports: list[int]):
        self.hits: list[tuple[str, int]] = []
        self.socks: list[socket.socket] = []
        self._stop = threading.Event()
        for p in udp_ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, p))
            s.settimeout(0.2)
            self.socks.append(s)
            threading.Thread(target=self._udp, args=(s, p), daemon=True).start()
        for p in tcp_ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, p))
            s.listen(8)
            s.settimeout(0.2)
            self.socks.append(s)
            threading.Thread(target=self._tcp, args=(s, p), daemon=True).start()

    def _udp(self, s: socket.socket, p: int) -> None:
        while not self._stop.is_set():
            try:
                s.recvfrom(65535)
                self.hits.append(("udp", p))
            except (socket.timeout, OSError):
                continue

    def _tcp(self, s: socket.socket, p: int) -> None:
        while not self._stop.is_set():
            try:
                c, _ = s.accept()
                self.hits.append(("tcp", p))
                c.close()
            except (socket.timeout, OSError):
                continue

    def stop(self) -> None:
        self._stop.set()
        for s in self.socks:
            s.close()


_ = shutil
