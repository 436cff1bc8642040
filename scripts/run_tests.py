"""Run each test file in its own pytest process and print one combined summary.

Why: the suite starts real daemons and some libraries keep process-wide state (pysnmp
engines per event loop, the collector's GC tuning, asyncio loop policies). One process per
file keeps a leftover from one file from hanging or skewing another, and a crash in one
file cannot take the rest of the run with it.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    extra = [a for a in argv if a.startswith("-")]
    files = [a for a in argv if not a.startswith("-")] or sorted(str(p.relative_to(ROOT))
                                                                 for p in (ROOT / "tests").glob("test_*.py"))
    totals = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    bad: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate(files, 1):
            xml = Path(tmp) / f"{i}.xml"
            t0 = time.monotonic()
            rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                                  f"--junitxml={xml}", *extra, f], cwd=ROOT)
            counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
            if xml.exists():
                suite = ET.parse(xml).getroot()
                suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
                counts = {k: int(suite.get(k, 0)) for k in counts}
            if rc not in (0, 5) or not xml.exists():
                bad.append(f"{f} (exit {rc})")
                if not counts["failures"] and not counts["errors"]:
                    counts["errors"] = 1
            totals["failed"] += counts["failures"]
            totals["errors"] += counts["errors"]
            totals["skipped"] += counts["skipped"]
            totals["passed"] += counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
            print(f"[{i}/{len(files)}] {f}: {time.monotonic() - t0:.0f}s", flush=True)
    print(f"\n{len(files)} test files in {time.monotonic() - started:.0f}s")
    for b in bad:
        print(f"FAILED FILE {b}")
    failed = totals["failed"] + totals["errors"]
    print(f"{totals['passed']} passed, {failed} failed, {totals['skipped']} skipped")
    return 1 if failed or not totals["passed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
