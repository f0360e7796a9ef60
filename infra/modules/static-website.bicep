// Switches on the storage account's static website (the $web container and its
// <account>.zNN.web.core.windows.net endpoint). Bicep/ARM has no property for this: it is a
// Blob *service property* set through the data plane, so a deployment script runs the one
// Azure CLI command, signed in as the deploy identity (Storage Account Contributor on the
// page's own account only, modules/web-storage.bicep), with --auth-mode login because the account accepts no shared keys.
//
// Honest note on the script's own storage: Microsoft.Resources/deploymentScripts runs the
// script in an Azure Container Instance and keeps the script and its logs on a file share in
// a storage account of its own. Unless storageAccountSettings names an existing account (which
// must then allow shared-key access, since the service mounts the share with the key), the
// service creates a temporary account in this resource group, with shared-key access on. It
// holds only this script and its output, never user data, and cleanupPreference 'Always'
// deletes it together with the container instance when the script finishes (retentionInterval
// bounds how long the script resource itself is kept). Subscriptions whose policy forbids
// shared-key storage accounts can deploy with enableStaticWebsiteScript=false and run the same
// command by hand (infra/README.md, step "static website without the deployment script").

param location string
param storageAccountName string
param deployIdentityId string

@description('Azure CLI version of the deployment script container image.')
param azCliVersion string = '2.67.0'

@description('Changes on every deployment so the (idempotent) script runs each time.')
param forceUpdateTag string = utcNow()

param tags object = {}

resource enableStaticWebsite 'Microsoft.Resources/deploymentScripts@2023-08-01' = {
  name: 'enable-static-website'
  location: location
  tags: tags
  kind: 'AzureCLI'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${deployIdentityId}': {}
    }
  }
  properties: {
    azCliVersion: azCliVersion
    forceUpdateTag: forceUpdateTag
    cleanupPreference: 'Always'
    retentionInterval: 'PT1H'
    timeout: 'PT20M'
    environmentVariables: [
      {
        name: 'STORAGE_ACCOUNT'
        value: storageAccountName
      }
    ]
    // Retries cover the minutes a fresh role assignment can take to reach the data plane.
    scriptContent: '''
set -euo pipefail
for attempt in $(seq 1 20); do
  if az storage blob service-properties update \
      --account-name "$STORAGE_ACCOUNT" \
      --auth-mode login \
      --static-website \
      --index-document index.html \
      --404-document index.html \
      --output none; then
    echo "static website enabled on $STORAGE_ACCOUNT (attempt $attempt)"
    exit 0
  fi
  echo "attempt $attempt failed; waiting for the role assignment to propagate"
  sleep 30
done
echo "could not enable the static website on $STORAGE_ACCOUNT" >&2
exit 1
'''
  }
}

output scriptName string = enableStaticWebsite.name
