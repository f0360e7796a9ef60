#!/usr/bin/env bash
# Publishes the page: a copy of static_site/ whose config.js names the API, uploaded to the
# $web container of the page's storage account (the static website). Run by the azd postdeploy
# hook (infra/hooks/postdeploy.sh) and by infra/deploy.sh: one publishing step for both.
#
# Reads the names of infra/main.bicep's outputs, as azd keeps them in its environment and
# deploy.sh exports them:
#   SERVICE_APP_URI                 the API's base URL (required)
#   AZURE_WEB_STORAGE_ACCOUNT_NAME  the page's storage account (required)
#   STATIC_WEBSITE_BY_SCRIPT        false: the deployment script did not switch the static
#                                   website on (policy forbids it), so switch it on here first
# Needs the Azure CLI, signed in as someone with Storage Blob Data Contributor on $web (the
# template grants it to principalId); the account accepts no keys.
set -euo pipefail

: "${SERVICE_APP_URI:?SERVICE_APP_URI (the API URL) is not set: deploy the app first (azd deploy / deploy.sh)}"
: "${AZURE_WEB_STORAGE_ACCOUNT_NAME:?AZURE_WEB_STORAGE_ACCOUNT_NAME is not set: provision first (azd provision / deploy.sh)}"
STATIC_WEBSITE_BY_SCRIPT=${STATIC_WEBSITE_BY_SCRIPT:-true}

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
command -v az >/dev/null || { echo "publish-site: the Azure CLI (az) is not installed" >&2; exit 1; }

# retry <attempts> <seconds between> <command...>: for data-plane calls right after a role
# assignment, which can take a few minutes to take effect.
retry() {
  local attempts=$1 pause=$2 attempt
  shift 2
  for attempt in $(seq 1 "$attempts"); do
    if "$@"; then
      return 0
    fi
    if [ "$attempt" -lt "$attempts" ]; then
      echo "attempt $attempt of $attempts failed; retrying in ${pause}s"
      sleep "$pause"
    fi
  done
  return 1
}

if [ "$STATIC_WEBSITE_BY_SCRIPT" = false ]; then
  echo "switching the static website on (no deployment script)"
  retry 20 30 az storage blob service-properties update \
    --account-name "$AZURE_WEB_STORAGE_ACCOUNT_NAME" \
    --auth-mode login \
    --static-website \
    --index-document index.html \
    --404-document index.html \
    --output none \
    || { echo "publish-site: could not enable the static website on $AZURE_WEB_STORAGE_ACCOUNT_NAME" >&2; exit 1; }
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cp -R "$REPO_ROOT/static_site/." "$STAGE/"
cat > "$STAGE/config.js" <<CONFIG
// Written at deployment (infra/scripts/publish-site.sh): the page on the static website calls the API on another origin.
window.FACE_API_BASE = "$SERVICE_APP_URI";
CONFIG

# no-cache: the page (config.js above all) must change at once after a redeploy.
retry 20 30 az storage blob upload-batch \
  --account-name "$AZURE_WEB_STORAGE_ACCOUNT_NAME" \
  --auth-mode login \
  --destination "\$web" \
  --source "$STAGE" \
  --content-cache-control 'no-cache' \
  --overwrite \
  --output none \
  || { echo "publish-site: could not upload the page (is the Storage Blob Data Contributor role on \$web in place?)" >&2; exit 1; }
echo "page published to $AZURE_WEB_STORAGE_ACCOUNT_NAME/\$web, calling $SERVICE_APP_URI"
