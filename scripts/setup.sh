#!/usr/bin/env bash
# Installs what the service and its tests need. Idempotent: a second run with unchanged
# requirement files returns at once.
#   .venv          the run time + the build tools (torch, export) + the test tools
#   .venv-runtime  the run time alone (requirements.txt): what the image's final stage holds;
#                  the tests run a whole job in it to show the service needs nothing else
#   .venv-checkov  checkov, whose pins clash with the app's
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
want=$(stamp_of requirements.txt requirements-build.txt requirements-upstream.txt requirements-dev.txt)
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages (torch is large: the first run takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip wheel setuptools
  # torch first and on its own so nothing else picks a different build.
  .venv/bin/python -m pip install --quiet "$(grep '^torch==' requirements-build.txt)" "$(grep '^torchvision==' requirements-build.txt)"
  .venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-build.txt -r requirements-dev.txt
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -r requirements-upstream.txt
  # A .venv made before the split has the GUI OpenCV that the upstream packages asked for;
  # it shares cv2/ with the headless one, so remove it and put the headless files back.
  if .venv/bin/python -m pip show opencv-python > /dev/null 2>&1; then
    .venv/bin/python -m pip uninstall --quiet -y opencv-python
    .venv/bin/python -m pip install --quiet --force-reinstall --no-deps "$(grep '^opencv-python-headless==' requirements.txt)"
  fi
  echo "$want" > .venv/.requirements.sha256
fi

runtime_want=$(stamp_of requirements.txt)
if [ "$(cat .venv-runtime/.requirements.sha256 2>/dev/null)" != "$runtime_want" ]; then
  echo "setup: installing the run time alone into .venv-runtime"
  rm -rf .venv-runtime
  "$PYTHON" -m venv .venv-runtime
  .venv-runtime/bin/python -m pip install --quiet --upgrade pip
  .venv-runtime/bin/python -m pip install --quiet -r requirements.txt
  echo "$runtime_want" > .venv-runtime/.requirements.sha256
fi

checkov_want=$(stamp_of tests/infra/requirements-checkov.txt)
if [ "$(cat .venv-checkov/.requirements.sha256 2>/dev/null)" != "$checkov_want" ]; then
  echo "setup: installing checkov into .venv-checkov"
  "$PYTHON" -m venv .venv-checkov
  .venv-checkov/bin/python -m pip install --quiet -r tests/infra/requirements-checkov.txt
  echo "$checkov_want" > .venv-checkov/.requirements.sha256
fi
if [ ! -x node_modules/.bin/azurite ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
