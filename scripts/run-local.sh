#!/usr/bin/env bash
# Runs the whole service on this machine: Azurite, the worker and the API with the page.
#   PORT=8000 ./scripts/run-local.sh
# Weights: official ones in weights/official (fetch them once with
#   .venv/bin/python -m processing weights fetch --dir weights/official)
# are used when present and intact; otherwise STAND-IN weights are built and used,
# and the API and page say so loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

PORT=${PORT:-8000}
AZURITE_DIR=${AZURITE_DIR:-.azurite}
mkdir -p "$AZURITE_DIR" .run
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if ! (exec 3<>/dev/tcp/127.0.0.1/10000) 2>/dev/null; then
  echo "run: starting Azurite (data in $AZURITE_DIR, log in .run/azurite.log)"
  node_modules/.bin/azurite --silent --skipApiVersionCheck --loose --location "$AZURITE_DIR" \
    --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 > .run/azurite.log 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/10002) 2>/dev/null && break; sleep 0.2; done
else
  echo "run: using the Azurite already listening on 127.0.0.1:10000"
fi

export AzureWebJobsStorage=${AzureWebJobsStorage:-UseDevelopmentStorage=true}
if .venv/bin/python -m processing weights verify --dir weights/official > .run/weights.log 2>&1; then
  export WEIGHTS_DIR=weights/official
else
  export WEIGHTS_DIR=weights/standin STANDIN_WEIGHTS=true
  if ! .venv/bin/python -m processing weights verify --dir weights/standin > /dev/null 2>&1; then
    .venv/bin/python -m processing weights standin --dir weights/standin
  fi
  echo
  echo "  *** STAND-IN WEIGHTS: official weights not found in weights/official."
  echo "  *** The pipeline runs for real, but restored faces are meaningless pixels."
  echo
fi

.venv/bin/python -m processing worker > >(sed -u 's/^/[worker] /') 2>&1 &
pids+=($!)
echo "run: the page and API are at http://127.0.0.1:$PORT/  (API reference: http://127.0.0.1:$PORT/docs)"
.venv/bin/python -m processing serve --port "$PORT" 2>&1 | sed -u 's/^/[api] /' &
pids+=($!)
wait -n "${pids[@]}"
