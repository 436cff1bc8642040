#!/usr/bin/env python3
"""Instructions the embedded store spends per sample (SQLiteStore.apply + seal), counted by
valgrind's cachegrind: deterministic, unlike CPU seconds on a machine whose speed drifts (this
development VM's drifts by +-30% within minutes). The working tree and a git revision are
measured in the same run.

    .venv/bin/python bench/instructions.py [--base HEAD] [--switches 1] [--hours 25]

Each side runs twice under cachegrind (`--cache-sim=no`, PYTHONHASHSEED=0): building and decoding
the messages only, then the same plus apply and seal (bench/store.py's simulated switches, 50
messages per apply, a seal every simulated hour, the collector's GC settings); the difference over
the samples is the store's cost. Needs valgrind (`apt install valgrind`); ~1 min per side and
switch-day. Not a test: a guide for changes to collector/store/.

Measured on 2026-12-07 (1 switch, 25 h, --base 5c6dd5e): 5c6dd5e 53,610, 01f6702 33,176 instructions
per sample (-38.1%); later (--base 3c5f48d): 3c5f48d 32,490, 49c89ce 23,307 (-28.3%: agents send
a poll as one table, each side measured with the messages its own bench/store.py builds).
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(root: str, full: bool, switches: int, hours: float) -> None:
    """Feed the simulated week through the store of ``root`` (full) or only build the messages."""
    sys.path.insert(0, root)
    sys.path.insert(0, str(Path(root) / "bench"))
    import store as bs   # noqa: E402  bench/store.py of that tree
    from campus_sense import wire   # noqa: E402
    pack = getattr(wire, "pack", None) or (lambda p: p)     # revisions before agents sent zstd frames
    s = None
    if full:
        from collector.store.sqlite import SQLiteStore   # noqa: E402
        gc.freeze()                                       # the collector's GC settings (ingest.tune_gc)
        gc.set_threshold(50_000, 20, 100)
        s = SQLiteStore(tempfile.mkdtemp() + "/c.db", seal_interval_s=1e9)
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % bs.DAY
    seq, group, next_seal, n, t = 0, [], t0 + bs.HOUR, 0, t0
    for t, dev, ports in bs.week(switches, hours / 24, t0):
        seq += 1
        if hasattr(bs, "encoded_items"):     # as the agent sends them (tables since 2026-12-07)
            items = bs.encoded_items(dev, t, ports)
        else:
            items = [wire.encode_item(wire.sample("interface", dev, t, f, bs.tags(i))) for i, f in enumerate(ports)]
        payload = pack(wire.encode_durable("metrics", bs.AGENT, bs.EPOCH, seq, t, items))
        m = wire.decode(bs.TOPIC, payload)
        m.raw = payload
        group.append(m)
        n += len(ports)
        if len(group) >= 50:
            if s:
                s.apply(group, [])
            group = []
            if t >= next_seal:
                if s:
                    s.seal(now_ms=t + 600_000)
                next_seal = t - t % bs.HOUR + bs.HOUR
    if s:
        if group:
            s.apply(group, [])
        s.seal(now_ms=t + 600_000)
        s.seal(now_ms=t + 600_000, cutoff=t - t % bs.HOUR + bs.HOUR)
        s.close()
    print(f"samples {n}")


def count(root: str, full: bool, a) -> tuple[int, int]:
    """(instructions, samples) of one worker run under cachegrind."""
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
           sys.executable, __file__, "--worker", root, "--full" if full else "--build",
           "--switches", str(a.switches), "--hours", str(a.hours)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    ir = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
    n = re.search(r"samples (\d+)", r.stdout)
    if r.returncode or not ir or not n:
        sys.exit(f"{root}: cachegrind run failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return int(ir.group(1).replace(",", "")), int(n.group(1))


def per_sample(root: str, a) -> float:
    b, n = count(root, False, a)
    f, _ = count(root, True, a)
    return (f - b) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="HEAD", help="git revision to compare the working tree with")
    ap.add_argument("--switches", type=int, default=1)
    ap.add_argument("--hours", type=float, default=25)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.full, a.switches, a.hours)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        base = str(Path(tmp) / "base")
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", base, a.base], check=True,
                       capture_output=True)
        try:
            got = [(f"{a.base} ({base})", per_sample(base, a)), ("working tree", per_sample(str(ROOT), a))]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", base], capture_output=True)
    print(f"{a.switches} switch(es) x 48 ports x {a.hours:g} h; instructions per sample, apply + seal:")
    for name, v in got:
        print(f"  {v:10,.0f}  {name}")
    print(f"  {got[1][1] / got[0][1] - 1:+.1%}  working tree against {a.base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
