#!/usr/bin/env bash
# Runs the whole test suite. The tests start their own Azurite on free ports and build
# stand-in weights (cached in .cache/) themselves.   ./scripts/test.sh [pytest args]
# Two test processes (TEST_PROCESSES; 0 runs them in this one): much of a live-stack test is
# waiting on the processes it started, which the other test process fills. Each test file
# stays in one process (--dist loadfile), so a file's shared fixtures are set up once; files go
# out in the order tests/conftest.py gives them, the longest first (xdist would otherwise put
# files with many tests first, and a long one-test file such as the soak would run last, alone).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -n "${TEST_PROCESSES:-2}" --dist loadfile --no-loadscope-reorder "$@"
