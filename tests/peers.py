"""Real peers for tests: start actual daemons on loopback, on free ports, with auth.

Each helper returns an object with ``stop()``/``start()`` so outage tests can
kill and restart the peer on the same port.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class Mosquitto:
    """A private Mosquitto with password auth (no anonymous) and persistence,
    so a restart keeps the collector's persistent session and queued messages."""

    #: durability lines copied from the shipped config, so tests and production cannot diverge
    SHIPPED = Path(__file__).resolve().parent.parent / "docker" / "mosquitto"
    DURABILITY = ("autosave_interval", "autosave_on_changes", "max_queued_messages")

    def __init__(self, users: dict[str, str], workdir: Path | None = None, port: int | None = None,
                 shipped: bool = False):
        """``shipped``: also the shipped ACL (docker/mosquitto/acl) and client id = user name."""
        if not shutil.which("mosquitto"):
            raise RuntimeError("mosquitto is not installed (scripts/install.sh installs it)")
        self.users = users
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="mosq-"))
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        pw = self.dir / "passwd"
        pw.write_text("")
        for u, p in users.items():
            subprocess.run(["mosquitto_passwd", "-b", str(pw), u, p], check=True, capture_output=True)
        os.chmod(pw, 0o600)
        (self.dir / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n"
            # as root, mosquitto would drop to user "mosquitto", which cannot read a 0700 tmp dir
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "allow_anonymous false\n"
            f"password_file {pw}\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            + "".join(line + "\n" for line in (self.SHIPPED / "mosquitto.conf").read_text().splitlines()
                      if line.split(" ")[0] in self.DURABILITY + (("use_username_as_clientid",) if shipped else ()))
            + (f"acl_file {self._shipped_acl()}\n" if shipped else "") +
            "max_inflight_messages 100\n"
            "message_size_limit 4194304\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
        )

    def _shipped_acl(self) -> Path:
        """The shipped ACL (docker/mosquitto/acl) plus, per agent user, the block `campus-sense enrol`
        writes, with any site/building (tests pick their own): ``self.dir / "acl"``."""
        acl = self.dir / "acl"
        acl.write_text((self.SHIPPED / "acl").read_text() + "".join(
            f"user {u}\ntopic write campus/v1/+/+/{u}/#\n" for u in self.users if u != "collector"))
        return acl

    def reload(self) -> None:
        """SIGHUP: re-read the password and ACL files (what `enrol.reload_command` triggers)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def start(self) -> "Mosquitto":
        self.log = open(self.dir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.dir / "mosquitto.conf")],
                                     stdout=self.log, stderr=self.log)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # SIGTERM saves the persistence db
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no last save of the persistence database (what a crash or power cut does)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"
