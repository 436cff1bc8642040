"""victoria-metrics as a real InfluxDB-v2-write-compatible peer (loopback, free port)."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import orjson

from tests.peers import free_port, wait_port

VM_BIN = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


class VictoriaMetrics:
    def __init__(self, workdir: Path | None = None, port: int | None = None, args: tuple[str, ...] = ()):
        """``args``: extra flags, e.g. ``("-dedup.minScrapeInterval=1ms",)`` (idempotent redelivery)."""
        if not Path(VM_BIN).exists():
            raise RuntimeError("victoria-metrics is not installed")
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="vm-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.args = tuple(args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "VictoriaMetrics":
        self.log = open(self.dir / "vm.log", "ab")
        self.proc = subprocess.Popen(
            [VM_BIN, f"-storageDataPath={self.dir / 'data'}", f"-httpListenAddr=127.0.0.1:{self.port}",
             "-retentionPeriod=100y", "-loggerLevel=ERROR", *self.args],
            stdout=self.log, stderr=self.log)
        wait_port(self.port, 20)
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

    def flush(self) -> None:
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()

    def export(self, match: str = '{__name__!=""}') -> list[dict]:
        """All series matching ``match`` as dicts ``{metric, values, timestamps}``."""
        self.flush()
        q = urllib.parse.urlencode({"match[]": match, "start": "0"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{q}", timeout=30) as r:
            return [orjson.loads(ln) for ln in r.read().splitlines() if ln.strip()]

