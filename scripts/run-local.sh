#!/usr/bin/env bash
# Runs the whole service on this machine: Azurite, the worker and the API with the page.
#   PORT=8000 ./scripts/run-local.sh
# Weights: official checkpoints in weights/official (fetch them once with
#   .venv/bin/python -m processing.checkpoints fetch --dir weights/official)
# are used when present and intact; otherwise STAND-IN weights are built and used,
# and the API and page say so loudly. Either way they are exported to the model store the
# service runs (<dir>/onnx) first; that is instant when nothing changed.
# WEIGHTS_DIR (with STANDIN_WEIGHTS=true for stand-ins) picks another directory, and
# AZURITE_BLOB_PORT/AZURITE_QUEUE_PORT/AZURITE_TABLE_PORT with AzureWebJobsStorage other ports.
# Ctrl-C, SIGTERM, or any of its processes ending stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

PORT=${PORT:-8000}
AZURITE_DIR=${AZURITE_DIR:-.azurite}
BLOB=${AZURITE_BLOB_PORT:-10000} QUEUE=${AZURITE_QUEUE_PORT:-10001} TABLE=${AZURITE_TABLE_PORT:-10002}
mkdir -p "$AZURITE_DIR" .run

pids=()
names=()
# shellcheck disable=SC2317  # both are called from the EXIT trap
alive() { for pid in "$@"; do kill -0 "$pid" 2> /dev/null && return 0; done; return 1; }
# shellcheck disable=SC2317
cleanup() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] || return 0
  # SIGINT makes Azurite save its data at once; the services finish on SIGTERM. Azurite then
  # lingers while connections stay open, so whatever is left after 5 s is killed.
  for i in "${!pids[@]}"; do
    if [ "${names[$i]}" = azurite ]; then kill -INT "${pids[$i]}" 2> /dev/null || true; else kill "${pids[$i]}" 2> /dev/null || true; fi
  done
  for _ in $(seq 50); do alive "${pids[@]}" || break; sleep 0.1; done
  kill -KILL "${pids[@]}" 2> /dev/null || true
  wait "${pids[@]}" 2> /dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Each service's own PID is kept (its output goes through a process substitution that adds a
# prefix, so $! is the service, not the filter): stopping them is stopping the services.
start() {
  local name=$1
  shift
  "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
  names+=("$name")
}
listening() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }

if ! listening "$BLOB"; then
  echo "run: starting Azurite (data in $AZURITE_DIR, log in .run/azurite.log)"
  node_modules/.bin/azurite --silent --skipApiVersionCheck --loose --location "$AZURITE_DIR" \
    --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 \
    --blobPort "$BLOB" --queuePort "$QUEUE" --tablePort "$TABLE" > .run/azurite.log 2>&1 &
  pids+=($!)
  names+=(azurite)
  for _ in $(seq 50); do listening "$TABLE" && break; sleep 0.2; done
else
  echo "run: using the Azurite already listening on 127.0.0.1:$BLOB"
fi

export AzureWebJobsStorage=${AzureWebJobsStorage:-UseDevelopmentStorage=true}
if [ -n "${WEIGHTS_DIR:-}" ]; then
  echo "run: checkpoints from $WEIGHTS_DIR"
elif .venv/bin/python -m processing.checkpoints verify --dir weights/official > .run/weights.log 2>&1; then
  export WEIGHTS_DIR=weights/official
else
  export WEIGHTS_DIR=weights/standin STANDIN_WEIGHTS=true
  if ! .venv/bin/python -m processing.checkpoints verify --dir weights/standin > /dev/null 2>&1; then
    .venv/bin/python -m processing.checkpoints standin --dir weights/standin
  fi
  echo
  echo "  *** STAND-IN WEIGHTS: official weights not found in weights/official."
  echo "  *** The pipeline runs for real, but restored faces are meaningless pixels."
  echo
fi
.venv/bin/python -m processing.checkpoints export --dir "$WEIGHTS_DIR" | sed -u 's/^/[export] /'

# Webhooks: local development may call http://127.0.0.1:... (refused everywhere else), signed
# with a secret kept across runs in .run/webhook-secret (GET /api/webhooks/secret answers it).
export WEBHOOK_ALLOW_PRIVATE=${WEBHOOK_ALLOW_PRIVATE:-true}
if [ -z "${WEBHOOK_SECRET:-}" ]; then
  [ -s .run/webhook-secret ] || .venv/bin/python -c "from processing.config import new_secret; print(new_secret())" > .run/webhook-secret
  WEBHOOK_SECRET=$(cat .run/webhook-secret)
  export WEBHOOK_SECRET
fi

start worker .venv/bin/python -m processing worker
echo "run: the page and API are at http://127.0.0.1:$PORT/  (API reference: http://127.0.0.1:$PORT/docs)"
start api .venv/bin/python -m processing serve --port "$PORT"

status=0
wait -n "${pids[@]}" || status=$?
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2> /dev/null; then
    echo "run: ${names[$i]} stopped (exit $status); stopping the rest" >&2
  fi
done
exit "$status"
