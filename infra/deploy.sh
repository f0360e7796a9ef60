#!/usr/bin/env bash
# From nothing to a working URL: resource group, infrastructure, image build, app, page.
#
#   az login                      # once; an account that can create resources and role
#                                 # assignments in the subscription (Owner, or Contributor +
#                                 # User Access Administrator)
#   ./infra/deploy.sh             # or with settings: HOSTING=premium LOCATION=swedencentral ./infra/deploy.sh
#
# Every step is written out in infra/README.md, which explains each one. Re-running is safe:
# every step is idempotent, and a re-run builds and rolls out a new image tag.
set -euo pipefail

# ----------------------------------------------------------------------------------------
# Settings (environment variables, with defaults)
# ----------------------------------------------------------------------------------------
RESOURCE_GROUP=${RESOURCE_GROUP:-face-restore}
LOCATION=${LOCATION:-westeurope}
PREFIX=${PREFIX:-facefix}                     # 2-12 chars: lowercase letters, digits, hyphens
HOSTING=${HOSTING:-containerapps}             # containerapps | premium
MIN_REPLICAS=${MIN_REPLICAS:-0}                # containerapps only: 0 scales to zero
MAX_INSTANCES=${MAX_INSTANCES:-5}
RETENTION_DAYS=${RETENTION_DAYS:-1}
CPU=${CPU:-2.0}                               # containerapps only
MEMORY=${MEMORY:-4Gi}                         # containerapps only (2 GiB per vCPU)
PREMIUM_SKU=${PREMIUM_SKU:-EP1}               # premium only
IMAGE_NAME=${IMAGE_NAME:-face-restore}
IMAGE_TAG=${IMAGE_TAG:-}                      # default: <git short sha>-<UTC timestamp>
WEIGHTS_FROM=${WEIGHTS_FROM:-}                # e.g. weights-official: bake a local copy instead of downloading
USE_DEPLOYMENT_SCRIPT=${USE_DEPLOYMENT_SCRIPT:-true}  # false: enable the static website from here instead
SMOKE_IMAGE=${SMOKE_IMAGE:-}                  # a photo to run one real job through at the end

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'deploy: %s\n' "$*" >&2; exit 1; }
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

case "$HOSTING" in
  containerapps | premium) ;;
  *) die "HOSTING must be containerapps or premium, not '$HOSTING'" ;;
esac
case "$USE_DEPLOYMENT_SCRIPT" in
  true | false) ;;
  *) die "USE_DEPLOYMENT_SCRIPT must be true or false" ;;
esac
command -v az >/dev/null || die "the Azure CLI (az) is not installed"
command -v curl >/dev/null || die "curl is not installed"
if [ ! -f Dockerfile ] || [ ! -d static_site ]; then
  die "run from the repository (Dockerfile and static_site/ not found)"
fi
if [ -n "$WEIGHTS_FROM" ] && [ ! -d "$WEIGHTS_FROM" ]; then
  die "WEIGHTS_FROM=$WEIGHTS_FROM is not a directory of the repository"
fi
if [ -z "$IMAGE_TAG" ]; then
  IMAGE_TAG="$(git rev-parse --short HEAD 2>/dev/null || echo build)-$(date -u +%Y%m%d%H%M%S)"
fi

az account show --output none 2>/dev/null || die "not signed in: run 'az login' (and 'az account set --subscription <id>')"
log "Subscription: $(az account show --query '[name, id]' --output tsv | paste -sd' ')"

# Whoever runs this gets Storage Blob Data Contributor on the account (through Bicep) to
# upload the page with --auth-mode login: the account accepts no keys.
DEPLOYER_TYPE=User
DEPLOYER_ID=$(az ad signed-in-user show --query id --output tsv 2>/dev/null || true)
if [ -z "$DEPLOYER_ID" ]; then
  # Signed in as a service principal (CI): look up its object id instead.
  DEPLOYER_TYPE=ServicePrincipal
  DEPLOYER_ID=$(az ad sp show --id "$(az account show --query user.name --output tsv)" --query id --output tsv)
fi

# ----------------------------------------------------------------------------------------
log "1/7 Resource providers (first use in a subscription only; returns at once afterwards)"
for namespace in Microsoft.App Microsoft.ContainerRegistry Microsoft.ContainerInstance \
  Microsoft.ManagedIdentity Microsoft.OperationalInsights Microsoft.Insights \
  Microsoft.Storage Microsoft.Web Microsoft.Resources; do
  az provider register --namespace "$namespace" --wait --output none
done

# ----------------------------------------------------------------------------------------
log "2/7 Resource group $RESOURCE_GROUP in $LOCATION"
az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --output none

deploy() { # deploy <deployment name> <image or ''> <enableStaticWebsiteScript>
  az deployment group create \
    --resource-group "$RESOURCE_GROUP" \
    --name "$1" \
    --template-file infra/main.bicep \
    --parameters \
      namePrefix="$PREFIX" \
      hosting="$HOSTING" \
      image="$2" \
      cpu="$CPU" \
      memory="$MEMORY" \
      minReplicas="$MIN_REPLICAS" \
      maxInstances="$MAX_INSTANCES" \
      retentionDays="$RETENTION_DAYS" \
      premiumSku="$PREMIUM_SKU" \
      enableStaticWebsiteScript="$3" \
      deployerPrincipalId="$DEPLOYER_ID" \
      deployerPrincipalType="$DEPLOYER_TYPE" \
    --output none
}
output() { # output <deployment name> <output name>
  az deployment group show \
    --resource-group "$RESOURCE_GROUP" \
    --name "$1" \
    --query "properties.outputs.$2.value" \
    --output tsv
}

# ----------------------------------------------------------------------------------------
log "3/7 Infrastructure without the app (registry, storage, identities, monitoring, static website)"
deploy "$PREFIX-infra" "" "$USE_DEPLOYMENT_SCRIPT"
REGISTRY=$(output "$PREFIX-infra" registryName)
LOGIN_SERVER=$(output "$PREFIX-infra" registryLoginServer)
STORAGE=$(output "$PREFIX-infra" storageAccountName)
echo "registry $LOGIN_SERVER, storage account $STORAGE"

if [ "$USE_DEPLOYMENT_SCRIPT" = false ]; then
  echo "enabling the static website from here (USE_DEPLOYMENT_SCRIPT=false)"
  retry 20 30 az storage blob service-properties update \
    --account-name "$STORAGE" \
    --auth-mode login \
    --static-website \
    --index-document index.html \
    --404-document index.html \
    --output none \
    || die "could not enable the static website on $STORAGE"
fi

# ----------------------------------------------------------------------------------------
IMAGE="$LOGIN_SERVER/$IMAGE_NAME:$IMAGE_TAG"
log "4/7 Image $IMAGE (ACR Tasks build in Azure: installs CPU torch, fetches and verifies the weights)"
BUILD_ARGS=()
if [ -n "$WEIGHTS_FROM" ]; then
  BUILD_ARGS=(--build-arg "WEIGHTS_FROM=$WEIGHTS_FROM")
fi
az acr build \
  --registry "$REGISTRY" \
  --image "$IMAGE_NAME:$IMAGE_TAG" \
  --file Dockerfile \
  ${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"} \
  .

# ----------------------------------------------------------------------------------------
log "5/7 The app ($HOSTING) running $IMAGE"
# The static website was switched on in step 3; no need to run the script again.
deploy "$PREFIX-app" "$IMAGE" false
API_URL=$(output "$PREFIX-app" apiUrl)
SITE_URL=$(output "$PREFIX-app" siteUrl)
SITE_ORIGIN=$(output "$PREFIX-app" siteOrigin)
echo "API $API_URL"
echo "page $SITE_URL"

# ----------------------------------------------------------------------------------------
log "6/7 The page: static_site/ to \$web, with config.js pointing at the API"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cp -R static_site/. "$STAGE/"
cat > "$STAGE/config.js" <<EOF
// Written by infra/deploy.sh: the page on the static website calls the API on another origin.
window.FACE_API_BASE = "$API_URL";
EOF
# no-cache: the page (config.js above all) must change at once after a redeploy.
retry 20 30 az storage blob upload-batch \
  --account-name "$STORAGE" \
  --auth-mode login \
  --destination "\$web" \
  --source "$STAGE" \
  --content-cache-control 'no-cache' \
  --overwrite \
  --output none \
  || die "could not upload the page (is the Storage Blob Data Contributor role assignment in place?)"

# ----------------------------------------------------------------------------------------
log "7/7 Smoke test"
# The first request may wake a replica from zero: pulling the image and loading torch takes a while.
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

cat <<EOF

Deployed.
  page: $SITE_URL
  API:  $API_URL   (OpenAPI reference: $API_URL/docs)

Try it from a shell:
  curl -i -F file=@photo.jpg $API_URL/api/jobs          # 202 + Location: /api/jobs/<id>
  curl $API_URL/api/jobs/<id>                           # status, progress, links
  curl -o restored.png -L $API_URL/api/jobs/<id>/result # the restored image
EOF
