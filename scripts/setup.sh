#!/usr/bin/env bash
# Installs what the service and its tests need into .venv and node_modules. Idempotent:
# a second run with unchanged requirement files returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages (torch is large: the first run takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip wheel setuptools
  # torch first and on its own so nothing else picks a different build.
  .venv/bin/python -m pip install --quiet "$(grep '^torch==' requirements.txt)" "$(grep '^torchvision==' requirements.txt)"
  .venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
# checkov (infra checks) pins versions that clash with the app's, so it gets a venv of its own.
checkov_stamp=.venv-checkov/.requirements.sha256
checkov_want=$(sha256sum tests/infra/requirements-checkov.txt | cut -d' ' -f1)
if [ "$(cat "$checkov_stamp" 2>/dev/null)" != "$checkov_want" ]; then
  echo "setup: installing checkov into .venv-checkov"
  "$PYTHON" -m venv .venv-checkov
  .venv-checkov/bin/python -m pip install --quiet -r tests/infra/requirements-checkov.txt
  echo "$checkov_want" > "$checkov_stamp"
fi
if [ ! -x node_modules/.bin/azurite ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
