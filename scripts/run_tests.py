"""Run each test file in its own pytest process, two at a time (``-j N``), and print one combined
summary. Files run longest first (``scripts/test_durations.json``, rewritten by each full run).

Why: the suite starts real daemons and some libraries keep process-wide state (pysnmp
engines per event loop, the collector's GC tuning, asyncio loop policies). One process per
file keeps a leftover from one file from hanging or skewing another, and a crash in one
file cannot take the rest of the run with it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: files whose assertions depend on the agent getting the CPU on time (a poll every 0.25 s while the
#: disk is full): they run alone, after the others
SOLO = {"tests/test_agent_disk_full.py"}
#: seconds per test file of the last full run (scheduling order only)
DURATIONS = ROOT / "scripts" / "test_durations.json"


def _jobs(argv: list[str]) -> tuple[int, list[str]]:
    """``-j N`` / ``--jobs N`` (default 2: the CI machine's cores) taken out of the pytest options."""
    jobs, rest, it = 2, [], iter(argv)
    for a in it:
        if a in ("-j", "--jobs"):
            jobs = int(next(it))
        elif a.startswith("--jobs="):
            jobs = int(a.split("=", 1)[1])
        else:
            rest.append(a)
    return max(1, jobs), rest


def _durations() -> dict[str, float]:
    try:
        return json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str]) -> int:
    jobs, argv = _jobs(argv)
    extra = [a for a in argv if a.startswith("-")]
    named = [a for a in argv if not a.startswith("-")]
    files = named or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    # longest first (durations of the last full run), so two workers finish together
    known = _durations()
    files.sort(key=lambda f: -known.get(f, 60.0))
    totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    bad: list[str] = []
    took: dict[str, float] = {}
    lock = threading.Lock()
    started = time.monotonic()
    done = [0]
    with tempfile.TemporaryDirectory() as tmp:
        def run(i: int, f: str) -> None:
            xml = Path(tmp) / f"{i}.xml"
            log = Path(tmp) / f"{i}.log"
            t0 = time.monotonic()
            with open(log, "wb") as out:
                rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                                      f"--junitxml={xml}", *extra, f], cwd=ROOT, stdout=out,
                                     stderr=subprocess.STDOUT)
            counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
            if xml.exists():
                suite = ET.parse(xml).getroot()
                suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
                counts = {k: int(suite.get(k, 0)) for k in counts}
            with lock:
                # one file's output at a time, as if it had run alone
                sys.stdout.write(log.read_text(errors="replace"))
                if rc not in (0, 5) or not xml.exists():
                    bad.append(f"{f} (exit {rc})")
                    if not counts["failures"] and not counts["errors"]:
                        counts["errors"] = 1
                totals["failed"] += counts["failures"]
                totals["errors"] += counts["errors"]
                totals["skipped"] += counts["skipped"]
                totals["passed"] += counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
                took[f] = time.monotonic() - t0
                done[0] += 1
                print(f"[{done[0]}/{len(files)}] {f}: {took[f]:.0f}s", flush=True)

        numbered = list(enumerate(files, 1))
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(lambda a: run(*a), [a for a in numbered if a[1] not in SOLO]))
        for a in numbered:         # timing-sensitive files run alone, after the others
            if a[1] in SOLO:
                run(*a)
    print(f"\n{len(files)} test files in {time.monotonic() - started:.0f}s ({jobs} at a time)")
    for b in bad:
        print(f"FAILED FILE {b}")
    failed = totals["failed"] + totals["errors"]
    print(f"{totals['passed']} passed, {failed} failed, {totals['skipped']} skipped")
    if not named:     # a full run: remember the durations for the next one
        try:
            DURATIONS.write_text(json.dumps({**known, **{k: round(v, 1) for k, v in took.items()}}, indent=0,
                                            sort_keys=True))
        except OSError:
            pass
    return 1 if failed or not totals["passed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
