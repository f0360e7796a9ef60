#!/usr/bin/env bash
# Smoke test of a deployment: /api/health, the page and its config.js, CORS from the page's
# origin, and (with SMOKE_IMAGE) one real job. Run by the azd postdeploy hook and by
# infra/deploy.sh.
#
# Reads the names of infra/main.bicep's outputs (azd environment / deploy.sh exports):
#   SERVICE_APP_URI, SITE_URL, SITE_ORIGIN (required); SMOKE_IMAGE (optional: a photo).
set -euo pipefail

: "${SERVICE_APP_URI:?SERVICE_APP_URI (the API URL) is not set}"
: "${SITE_URL:?SITE_URL (the page URL) is not set}"
: "${SITE_ORIGIN:?SITE_ORIGIN (the page origin) is not set}"
SMOKE_IMAGE=${SMOKE_IMAGE:-}
API_URL=$SERVICE_APP_URI

die() { printf 'smoke-test: %s\n' "$*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is not installed"

# The first request may wake a replica from zero: pulling the image and loading the models takes a while.
healthy=false
for attempt in $(seq 1 40); do
  if curl --fail --silent --show-error --max-time 60 "$API_URL/api/health"; then
    echo
    healthy=true
    break
  fi
  echo " (health attempt $attempt: not ready yet; retrying in 15 s)"
  sleep 15
done
[ "$healthy" = true ] || die "$API_URL/api/health did not answer 200"

# (Each response is captured first: with pipefail, `curl | grep -q` can fail on SIGPIPE.)
PAGE=$(curl --fail --silent --show-error --max-time 30 "$SITE_URL") \
  || die "the page at $SITE_URL did not load"
grep -qi '<html' <<<"$PAGE" || die "$SITE_URL did not return the page"
CONFIG_JS=$(curl --fail --silent --show-error --max-time 30 "${SITE_URL%/}/config.js") \
  || die "config.js is missing on the static website"
grep -qF "$API_URL" <<<"$CONFIG_JS" || die "config.js on the static website does not point at $API_URL"
# The page is ES modules: a browser runs them only when served as JavaScript (upload-batch guesses the
# type from the extension, and a machine that maps .js to text/plain would ship a page that never starts).
MODULE_HEADERS=$(curl --fail --silent --show-error --max-time 30 --head "${SITE_URL%/}/js/main.js" | tr -d '\r') \
  || die "js/main.js is missing on the static website"
grep -qiE '^content-type: *(text|application)/javascript' <<<"$MODULE_HEADERS" \
  || die "js/main.js is not served as JavaScript, so the page's modules will not run"
# CORS: a preflight from the page's origin must be allowed.
PREFLIGHT=$(curl --silent --show-error --max-time 30 --output /dev/null --dump-header - \
  --request OPTIONS "$API_URL/api/jobs" \
  --header "Origin: $SITE_ORIGIN" \
  --header 'Access-Control-Request-Method: POST' | tr -d '\r')
grep -qiF "access-control-allow-origin: $SITE_ORIGIN" <<<"$PREFLIGHT" \
  || die "the API does not allow CORS from $SITE_ORIGIN"

if [ -n "$SMOKE_IMAGE" ]; then
  echo "submitting $SMOKE_IMAGE"
  SUBMITTED=$(curl --fail --silent --show-error --max-time 120 --output /dev/null --dump-header - \
    --form "file=@$SMOKE_IMAGE" "$API_URL/api/jobs" | tr -d '\r')
  LOCATION_PATH=$(sed -n 's/^[Ll]ocation: //p' <<<"$SUBMITTED")
  [ -n "$LOCATION_PATH" ] || die "no Location header from POST /api/jobs"
  for attempt in $(seq 1 60); do
    STATUS=$(curl --fail --silent --show-error --max-time 30 "$API_URL$LOCATION_PATH" \
      | sed -n 's/.*"status" *: *"\([a-z]*\)".*/\1/p')
    echo "job $LOCATION_PATH: $STATUS"
    case "$STATUS" in
      succeeded) break ;;
      failed | cancelled) die "the smoke job ended $STATUS" ;;
    esac
    [ "$attempt" -lt 60 ] || die "the smoke job did not finish in 10 minutes"
    sleep 10
  done
fi
echo "smoke test passed: $API_URL, $SITE_URL"
