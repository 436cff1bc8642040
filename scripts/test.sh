#!/usr/bin/env bash
# The full test suite on real peers. Installs what it needs first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
exec .venv/bin/python -m pytest -q -p no:cacheprovider -rs --timeout=600 tests "$@"
