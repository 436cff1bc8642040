"""Issue 9, agent on a full disk: a real agent process whose queue lives on a 4 MiB tmpfs.

What must hold while the filesystem is full: the WAL stays small, the agent does not
spin (CPU over 10 s), the log does not repeat an error more than once a minute, polling
goes on, SIGTERM ends the process within ``shutdown_drain_s`` + 5 s. After space returns
the queue resumes without a restart, and a real collector ends up with exactly
``produced_total - dropped_total`` items (both counters count ITEMS), with only the
normal at-least-once duplicates.

CPU and SIGTERM bounds are behaviour bounds (spin vs idle, honoured vs ignored), far
from the measured values, not benchmarks.
"""
from __future__ import annotations

import errno
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from edge_agent.queue import WAL_LIMIT_BYTES
from tests.collector_util import write_config as write_collector_config
from tests.peers import free_port
from tests.test_agent_e2e import AgentProc, Receiver, wait_for

DISK_BYTES = 4 * 1024 * 1024
RESERVE = 768 * 1024
DRAIN_S = 2


@pytest.fixture
def disk(tmp_path):
    """A 4 MiB tmpfs mounted for this test only (needs root / CAP_SYS_ADMIN)."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk tests (needs root): {r.stderr.strip()}")
    try:
        yield d
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(d)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)  # the agent may still be exiting


class Filler:
    """A file that takes the space the test wants taken."""

    def __init__(self, disk: Path):
        self.path = disk / "filler"
        self.f = open(self.path, "ab")

    def leave_free(self, nbytes: int) -> None:
        """Grow until at most ``nbytes`` are free (until ENOSPC for 0)."""
        chunk = b"\0" * 16384
        while free(self.path.parent) > nbytes:
            try:
                self.f.write(chunk[:max(4096, min(len(chunk), free(self.path.parent) - nbytes))])
                self.f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break

    def remove(self) -> None:
        self.f.close()
        self.path.unlink()


def free(d: Path) -> int:
    st = os.statvfs(d)
    return st.f_bavail * st.f_frsize


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float = 10.0, wal: Path | None = None) -> tuple[float, int]:
    """(CPU share of the process over ``seconds``, biggest WAL size seen meanwhile)."""
    c0, t0, biggest = cpu_s(pid), time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        if wal is not None and wal.exists():
            biggest = max(biggest, wal.stat().st_size)
        time.sleep(0.1)
    return (cpu_s(pid) - c0) / (time.monotonic() - t0), biggest


def agent_config(tmp_path: Path, disk: Path, port: int, password: str, **queue) -> Path:
    (tmp_path / "mqtt.pass").write_text(password + "\n")
    q = {"path": disk / "queue.db", "max_messages": 100000, "min_free_bytes": RESERVE, "overflow_max_items": 3000,
         **queue}
    p = tmp_path / "agent.yaml"
    p.write_text(
        "agent: {id: agent-a, site: north, building: A}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}, username: agent-a, password_file: {tmp_path / 'mqtt.pass'},"
        " keepalive_s: 5}\n"
        f"queue: {{{', '.join(f'{k}: {v}' for k, v in q.items())}}}\n"
        f"publish: {{batch_interval_s: 0.5, heartbeat_s: 5, selfmetrics_s: 1, reconnect_max_s: 5,"
        f" shutdown_drain_s: {DRAIN_S}}}\n"
        "devices:\n"
        "  - {id: sw1, driver: synthetic, interval_s: 0.25, options: {interfaces: 50}}\n"
        "  - {id: sw2, driver: synthetic, interval_s: 0.5}\n")
    return p


def meta(db: Path) -> dict[str, int | str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
        m = dict(c.execute("SELECT key, value FROM meta"))
        m["depth"] = c.execute("SELECT count(*) FROM messages").fetchone()[0]
    return {k: (v if k == "epoch" else int(v)) for k, v in m.items()}


def repeated_problems(log: str, per_minute: int = 1) -> dict[str, int]:
    """WARNING/ERROR lines, numbers blanked, seen more often than once a minute over the log's span."""
    lines = [ln for ln in log.splitlines() if " WARNING " in ln or " ERROR " in ln]
    stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", log, re.M)
    span_min = 1.0
    if len(stamps) >= 2:
        t = [time.mktime(time.strptime(s, "%Y-%m-%d %H:%M:%S")) for s in (stamps[0], stamps[-1])]
        span_min = max(1.0, (t[1] - t[0]) / 60)
    counts: dict[str, int] = {}
    for ln in lines:
        key = re.sub(r"\d+(\.\d+)?", "N", ln.split(" ", 2)[-1])
        counts[key] = counts.get(key, 0) + 1
    return {k: n for k, n in counts.items() if n > per_minute * span_min + 1}


def collector_counts(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as c:
        counters = dict(c.execute("SELECT name, value FROM counters"))
        hwm = c.execute("SELECT coalesce(max(hwm), 0) FROM seq_state WHERE agent='agent-a'").fetchone()[0]
        events = c.execute("SELECT count(*) FROM events WHERE agent='agent-a'").fetchone()[0]
        facts = c.execute("SELECT count(*) FROM devices WHERE facts_ms IS NOT NULL").fetchone()[0]
        agent = c.execute("SELECT state, dropped_total FROM agents WHERE id='agent-a'").fetchone()
    return {"points": counters.get("points_stored", 0), "duplicates": counters.get("duplicates", 0),
            "rejected": counters.get("rejected", 0), "hwm": hwm, "events": events, "facts": facts,
            "state": agent[0] if agent else None, "dropped_total": agent[1] if agent else None}


def poll_times(db: Path, device: str) -> list[int]:
    from collector.store.sqlite import stored_samples
    return sorted(s["t"] for s in stored_samples(str(db), "agent_poll", device))


def _health(port: int) -> dict:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).json()
    except (httpx.HTTPError, ValueError):
        return {}


def stop_timed(agent: AgentProc, limit_s: float) -> float:
    t0 = time.monotonic()
    agent.p.send_signal(signal.SIGTERM)
    try:
        rc = agent.p.wait(limit_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"SIGTERM not honoured within {limit_s} s\n{agent.tail()}") from None
    assert rc == 0, agent.tail()
    return time.monotonic() - t0


def test_full_disk_reserve_then_recovery_delivers_exactly_produced_minus_dropped(
        tmp_path, disk, mosquitto, mqtt_users):
    # the collector's persistent session exists before the outage, so the broker keeps what the agent sends
    cdb, api = tmp_path / "collector.db", free_port()
    ccfg = write_collector_config(tmp_path / "collector.yaml", mosquitto.port, "collector", mqtt_users["collector"],
                                  cdb, api, client_id="collector-diskfull")
    clog = open(tmp_path / "collector.log", "ab")
    collector = subprocess.Popen([sys.executable, "-m", "campus_sense", "collector", "--config", str(ccfg)],
                                 stdout=clog, stderr=subprocess.STDOUT)
    agent = None
    filler = Filler(disk)
    try:
        wait_for(lambda: _health(api).get("ingest", {}).get("connected"), "collector connected", timeout=60)
        mosquitto.stop()  # nothing drains: the queue grows until the disk is full
        filler.leave_free(1600 * 1024)
        agent = AgentProc(agent_config(tmp_path, disk, mosquitto.port, mqtt_users["agent-a"]))
        wal = disk / "queue.db-wal"

        # Phase A: the queue grows to the reserve, then makes room by dropping its oldest messages.
        wait_for(lambda: "under queue.min_free_bytes" in agent.log.read_text(), "the free-space reserve", agent,
                 timeout=120)
        wait_for(lambda: meta(disk / "queue.db")["dropped_total"] > 0, "drops under the reserve", agent)
        assert free(disk) > RESERVE // 4, "the queue ate into its reserve"

        # Phase B: someone else fills the disk completely.
        filler.leave_free(0)
        share, wal_max = cpu_share(agent.p.pid, 10.0, wal)
        assert agent.p.poll() is None, agent.tail()
        assert share < 0.30, f"agent used {share:.0%} CPU on a full disk\n{agent.tail()}"
        assert wal_max <= WAL_LIMIT_BYTES + 256 * 1024, f"WAL grew to {wal_max} bytes"
        full_s = 10.0

        # Phase C: space returns: the same process writes to its queue again (retry backoff <= 30 s) ...
        seq_at_free = meta(disk / "queue.db")["next_seq"]
        filler.remove()
        t_free = time.monotonic()
        wait_for(lambda: meta(disk / "queue.db")["next_seq"] > seq_at_free + 3, "the queue resumed", agent, timeout=60)
        # ... and once the broker is back delivers everything
        mosquitto.start()
        wait_for(lambda: collector_counts(cdb)["hwm"] >= seq_at_free, "the backlog at the collector", agent,
                 timeout=120)
        wait_for(lambda: meta(disk / "queue.db")["depth"] < 20, "the backlog delivered", agent, timeout=120)
        time.sleep(3)
        since_free_s = time.monotonic() - t_free
        took = stop_timed(agent, DRAIN_S + 5)
        m = meta(disk / "queue.db")
        last = m["next_seq"] - 1
        wait_for(lambda: collector_counts(cdb)["hwm"] >= last and collector_counts(cdb)["state"] == "offline",
                 f"collector has seq {last} and the agent's death", agent, timeout=120)
        time.sleep(1)
        c = collector_counts(cdb)
        stored = c["points"] + c["events"] + c["facts"]
        print(f"disk full: produced {m['produced_total']} items, dropped {m['dropped_total']}, stored {stored}, "
              f"{last} messages, {c['duplicates']} duplicate messages, CPU {share:.1%}, WAL max {wal_max}, "
              f"SIGTERM {took:.1f} s")
        assert m["dropped_total"] > 0 and m["depth"] == 0
        assert stored == m["produced_total"] - m["dropped_total"], (stored, m)
        assert c["dropped_total"] == m["dropped_total"]  # what the agent reported (death/heartbeat/agent)
        assert c["rejected"] == 0
        assert c["duplicates"] <= 32, "rows re-sent after recovery beyond one in-flight window"
        # Polling went on: the newest polls form one unbroken run (cycles 0.25 s apart) covering the time since
        # space returned AND the full-disk period before it (kept in memory or made room for). Spacing only:
        # the collector may shift a skewed agent's times by a constant.
        polls = poll_times(cdb, "sw1")
        start = len(polls) - 1
        while start > 0 and polls[start] - polls[start - 1] < 2000:
            start -= 1
        run_s = (polls[-1] - polls[start]) / 1000
        print(f"sw1: {len(polls)} polls stored, the last {len(polls) - start} unbroken over {run_s:.1f} s "
              f"({since_free_s:.1f} s since space returned, {full_s:.0f} s full before)")
        assert run_s >= since_free_s + full_s - 3, "polls missing around the full-disk period"
        log = agent.log.read_text()
        assert not repeated_problems(log), repeated_problems(log)
        assert len(log) < 200_000
    finally:
        if agent is not None and agent.p.poll() is None:
            agent.p.kill()
            agent.p.wait()
        if not filler.f.closed:
            filler.remove()
        if collector.poll() is None:
            collector.send_signal(signal.SIGTERM)
            try:
                collector.wait(30)
            except subprocess.TimeoutExpired:
                collector.kill()
                collector.wait()
        clog.close()


def test_full_disk_with_empty_queue_overflows_in_memory_backs_off_and_stops_on_sigterm(
        tmp_path, disk, mosquitto, mqtt_users):
    """The broker is up, the queue nearly empty: nothing to drop, so writes fail and the items wait in
    memory; the flush backs off instead of spinning, and SIGTERM is honoured on the full disk."""
    rx = Receiver(mosquitto.port, "collector", mqtt_users["collector"])
    agent = AgentProc(agent_config(tmp_path, disk, mosquitto.port, mqtt_users["agent-a"], min_free_bytes=0))
    filler = Filler(disk)
    try:
        wait_for(lambda: len(rx.durable()) >= 5, "first deliveries", agent)
        filler.leave_free(0)
        wait_for(lambda: "could not write to the queue" in agent.log.read_text(), "a failing flush", agent)
        share, wal_max = cpu_share(agent.p.pid, 10.0, disk / "queue.db-wal")
        assert share < 0.30, f"agent used {share:.0%} CPU on a full disk\n{agent.tail()}"
        assert wal_max <= WAL_LIMIT_BYTES + 256 * 1024
        log = agent.log.read_text()
        assert log.count("could not write to the queue") == 1, agent.tail()
        # space returns: the same process writes again (next retry is at most 30 s away)
        seq_before = max(rx.seqs())
        filler.remove()
        wait_for(lambda: "writable again" in agent.log.read_text(), "the queue writable again", agent, timeout=60)
        wait_for(lambda: max(rx.seqs()) > seq_before + 3, "deliveries after recovery", agent)
        polls_at = len(rx.polls("sw2"))
        wait_for(lambda: len(rx.polls("sw2")) > polls_at + 3, "polling after recovery", agent)
        # and full again: SIGTERM must still end it promptly
        filler = Filler(disk)
        filler.leave_free(0)
        time.sleep(3)
        took = stop_timed(agent, DRAIN_S + 5)
        print(f"empty queue on a full disk: CPU {share:.1%}, WAL max {wal_max}, SIGTERM {took:.1f} s")
        assert not repeated_problems(agent.log.read_text()), repeated_problems(agent.log.read_text())
    finally:
        if agent.p.poll() is None:
            agent.p.kill()
            agent.p.wait()
        if not filler.f.closed:
            filler.remove()
        rx.stop()
