#!/usr/bin/env bash
# From nothing to a working URL with the Azure CLI alone (no azd): resource group,
# infrastructure, image build, app, page. `azd up` (azure.yaml) does the same with the same
# template and the same publish and smoke-test scripts (infra/scripts/); this script is for
# people without azd and for HOSTING=premium, which azd does not deploy.
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
ALERT_EMAIL=${ALERT_EMAIL:-}                  # where the alerts go (empty: alerts notify no one)
AVAILABILITY_TEST=${AVAILABILITY_TEST:-true}  # false: no /api/health probe, so scale to zero really reaches zero

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'deploy: %s\n' "$*" >&2; exit 1; }
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

# Whoever runs this gets Storage Blob Data Contributor on the page's $web container (through
# Bicep) to upload the page with --auth-mode login: the accounts accept no keys.
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

# Whether the container app exists already: a first pass with an empty image then keeps the image
# it runs (instead of the placeholder main.bicep starts a new app on), as azd's
# SERVICE_APP_RESOURCE_EXISTS does.
APP_EXISTS=false
if [ "$HOSTING" = containerapps ] && az resource show --resource-group "$RESOURCE_GROUP" --name "$PREFIX-app" \
    --resource-type Microsoft.App/containerApps --output none 2>/dev/null; then
  APP_EXISTS=true
fi

deploy() { # deploy <deployment name> <image or ''> <enableStaticWebsiteScript>
  az deployment group create \
    --resource-group "$RESOURCE_GROUP" \
    --name "$1" \
    --template-file infra/main.bicep \
    --parameters \
      namePrefix="$PREFIX" \
      hosting="$HOSTING" \
      image="$2" \
      appExists="$APP_EXISTS" \
      cpu="$CPU" \
      memory="$MEMORY" \
      minReplicas="$MIN_REPLICAS" \
      maxInstances="$MAX_INSTANCES" \
      retentionDays="$RETENTION_DAYS" \
      premiumSku="$PREMIUM_SKU" \
      enableStaticWebsiteScript="$3" \
      principalId="$DEPLOYER_ID" \
      principalType="$DEPLOYER_TYPE" \
      alertEmail="$ALERT_EMAIL" \
      availabilityTest="$AVAILABILITY_TEST" \
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
log "3/7 Infrastructure (registry, storage, identities, monitoring, alerts, static website; the container app on its current or a placeholder image)"
deploy "$PREFIX-infra" "" "$USE_DEPLOYMENT_SCRIPT"
REGISTRY=$(output "$PREFIX-infra" AZURE_CONTAINER_REGISTRY_NAME)
LOGIN_SERVER=$(output "$PREFIX-infra" AZURE_CONTAINER_REGISTRY_ENDPOINT)
echo "registry $LOGIN_SERVER, data account $(output "$PREFIX-infra" AZURE_STORAGE_ACCOUNT_NAME)"

# ----------------------------------------------------------------------------------------
IMAGE="$LOGIN_SERVER/$IMAGE_NAME:$IMAGE_TAG"
log "4/7 Image $IMAGE (ACR Tasks build in Azure: installs the runtime, fetches and verifies the weights)"
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
# The names of main.bicep's outputs, as azd's environment has them: the scripts below read these.
SERVICE_APP_URI=$(output "$PREFIX-app" SERVICE_APP_URI)
AZURE_WEB_STORAGE_ACCOUNT_NAME=$(output "$PREFIX-app" AZURE_WEB_STORAGE_ACCOUNT_NAME)
SITE_URL=$(output "$PREFIX-app" SITE_URL)
SITE_ORIGIN=$(output "$PREFIX-app" SITE_ORIGIN)
STATIC_WEBSITE_BY_SCRIPT=$USE_DEPLOYMENT_SCRIPT
export SERVICE_APP_URI AZURE_WEB_STORAGE_ACCOUNT_NAME SITE_URL SITE_ORIGIN STATIC_WEBSITE_BY_SCRIPT SMOKE_IMAGE
echo "API $SERVICE_APP_URI"
echo "page $SITE_URL"

# ----------------------------------------------------------------------------------------
log "6/7 The page: static_site/ to \$web, with config.js pointing at the API"
./infra/scripts/publish-site.sh

# ----------------------------------------------------------------------------------------
log "7/7 Smoke test"
./infra/scripts/smoke-test.sh

cat <<EOF

Deployed.
  page: $SITE_URL
  API:  $SERVICE_APP_URI   (OpenAPI reference: $SERVICE_APP_URI/docs)

Try it from a shell:
  curl -i -F file=@photo.jpg $SERVICE_APP_URI/api/jobs          # 202 + Location: /api/jobs/<id>
  curl $SERVICE_APP_URI/api/jobs/<id>                           # status, progress, links
  curl -o restored.png -L $SERVICE_APP_URI/api/jobs/<id>/result # the restored image
EOF
