#!/usr/bin/env bash
# The full test suite on real peers. Installs what it needs first (idempotent).
# Each test file runs in its own pytest process (see scripts/run_tests.py); pass file
# names to run only those, or pytest options (e.g. -x, -k expr).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
exec .venv/bin/python scripts/run_tests.py --timeout=600 "$@"
