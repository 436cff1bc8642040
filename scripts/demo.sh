#!/usr/bin/env bash
# One command: broker, collector, agent and a simulated building on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/campus-sense demo "$@"
