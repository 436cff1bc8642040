"""systemd notify protocol (sd_notify(3)) without a dependency: one datagram per state change to the
AF_UNIX socket in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace).

Used by the agent and the collector under ``Type=notify`` + ``WatchdogSec=`` (packaging/systemd):

    n = Notifier.from_env()        # None-safe: does nothing outside systemd
    n.ready("12 devices")          # READY=1 + STATUS=
    n.watchdog()                   # WATCHDOG=1, every n.watchdog_interval_s (half of WatchdogSec)
    n.stopping()                   # STOPPING=1

``$WATCHDOG_USEC`` gives the watchdog timeout; ``$WATCHDOG_PID``, when set, must be our pid.
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("campus_sense.sdnotify")


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Notifier":
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET") or None
        wd = None
        try:
            if env.get("WATCHDOG_USEC") and (not env.get("WATCHDOG_PID") or int(env["WATCHDOG_PID"]) == os.getpid()):
                wd = int(env["WATCHDOG_USEC"])
        except ValueError:
            wd = None
        return cls(addr, wd if wd and wd > 0 else None)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half the timeout (None: no watchdog configured)."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, *lines: str) -> bool:
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), addr)
            return True
        except OSError as e:   # never fatal: systemd restarts us if the watchdog really starves
            log.warning("sd_notify %s: %s", self.address, e)
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
