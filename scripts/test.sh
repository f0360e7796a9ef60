#!/usr/bin/env bash
# Runs the whole test suite. The tests start their own Azurite on free ports and build
# stand-in weights (cached in .cache/) themselves.   ./scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
