"""Real syslog peers: util-linux ``logger`` and ``rsyslogd`` (relay to our receiver over UDP, TCP or
TLS with GnuTLS), plus a throwaway CA for the TLS tests (openssl)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.peers import free_port


def have_rsyslog() -> bool:
    return bool(shutil.which("rsyslogd")) and Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists()


def logger(port: int, message: str, *opts: str, tag: str = "campus-test", priority: str = "user.notice") -> None:
    """util-linux logger to 127.0.0.1:port (``-d`` UDP / ``-T`` TCP, ``--rfc3164`` / ``--rfc5424``,
    ``--octet-count``)."""
    subprocess.run(["logger", "-n", "127.0.0.1", "-P", str(port), "-t", tag, "-p", priority, *opts, message],
                   check=True, capture_output=True, timeout=10)


def make_certs(d: Path) -> dict[str, Path]:
    """CA, a server certificate for 127.0.0.1/localhost and a client certificate (RSA 2048)."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*a: str) -> None:
        subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=campus-sense test CA")
    for name, san in (("server", "IP:127.0.0.1,DNS:localhost"), ("client", "DNS:relay.campus.test")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={'127.0.0.1' if name == 'server' else 'relay.campus.test'}")
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {k: d / v for k, v in {"ca": "ca.pem", "server_cert": "server.pem", "server_key": "server.key",
                                  "client_cert": "client.pem", "client_key": "client.key"}.items()}


class Rsyslog:
    """rsyslogd in the foreground with its own config: imudp input on ``in_port`` and one omfwd
    action to 127.0.0.1:``target_port`` (``mode``: udp, tcp, tcp-octet, tls)."""

    def __init__(self, target_port: int, mode: str = "tls", certs: dict[str, Path] | None = None,
                 workdir: Path | None = None, template: str = "RSYSLOG_SyslogProtocol23Format",
                 extra: str = ""):
        if not shutil.which("rsyslogd"):
            raise RuntimeError("rsyslogd is not installed (scripts/install.sh --test installs it)")
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="rsyslog-"))
        (self.dir / "work").mkdir(parents=True, exist_ok=True)
        self.in_port = free_port(socket.SOCK_DGRAM)
        glob = f'global(workDirectory="{self.dir / "work"}"'
        fwd = f'action(type="omfwd" target="127.0.0.1" port="{target_port}" template="{template}" '
        if mode == "udp":
            fwd += 'protocol="udp")'
        elif mode == "tcp":
            fwd += 'protocol="tcp" TCP_Framing="traditional")'
        elif mode == "tcp-octet":
            fwd += 'protocol="tcp" TCP_Framing="octet-counted")'
        elif mode == "tls":
            assert certs is not None
            glob += (f' DefaultNetstreamDriverCAFile="{certs["ca"]}" DefaultNetstreamDriverCertFile="'
                     f'{certs["client_cert"]}" DefaultNetstreamDriverKeyFile="{certs["client_key"]}"')
            fwd += ('protocol="tcp" StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name" '
                    'StreamDriverPermittedPeers="127.0.0.1" TCP_Framing="octet-counted")')
        else:
            raise ValueError(mode)
        glob += ")"
        (self.dir / "rsyslog.conf").write_text(
            f"{glob}\n"
            'module(load="imudp")\n'
            f'input(type="imudp" address="127.0.0.1" port="{self.in_port}")\n'
            f"{extra}\n{fwd}\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Rsyslog":
        self._log = open(self.dir / "rsyslogd.log", "ab")
        self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(self.dir / "rsyslog.conf"),
                                      "-i", str(self.dir / "rsyslogd.pid")], stdout=self._log, stderr=self._log)
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"rsyslogd exited: {(self.dir / 'rsyslogd.log').read_text()}")
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

    def log(self) -> str:
        return (self.dir / "rsyslogd.log").read_text(errors="replace")
