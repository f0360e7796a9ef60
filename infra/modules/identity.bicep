// Identities and the only roles they get.
//
// app identity    -> used by the running container (Functions host + our code + KEDA scaler +
//                    image pulls + telemetry). Data-plane roles on the data account, AcrPull on
//                    the registry, Monitoring Metrics Publisher on Application Insights (Entra
//                    ID ingestion). No control-plane rights, no account keys.
// deploy identity -> used only by the deployment script that switches the static website on
//                    (a blob *service property*). Its roles are on the page's own account
//                    (modules/web-storage.bicep), which holds nothing but the page: it never
//                    has any right on the data account.
// deployer        -> whoever runs azd / deploy.sh (principalId): Storage Blob Data Contributor
//                    on the $web container only, to upload the page.

param location string
param appIdentityName string
param deployIdentityName string

@description('The data account (uploads, results, queue, tables).')
param storageAccountName string

@description('The page\'s account (static website only).')
param webStorageAccountName string

@description('The static website\'s container in the page\'s account.')
param webContainerName string = '$web'

param registryName string
param appInsightsName string

@description('Object id of the person or service principal running the deployment; gets Storage Blob Data Contributor on the $web container so it can upload the page with --auth-mode login. Empty: no assignment.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

param tags object = {}

// Built-in role definition ids, as published in https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
// (tests/infra/test_infra_roles.py checks each against that reference by the name of its key).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageAccountContributor: '17d1049b-9a84-46fb-8f53-869881c3d3ab'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

resource webStorage 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: webStorageAccountName

  resource blobService 'blobServices' existing = {
    name: 'default'

    resource webContainer 'containers' existing = {
      name: webContainerName
    }
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: appIdentityName
  location: location
  tags: tags
}

resource deployIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: deployIdentityName
  location: location
  tags: tags
}

// Blob Data Owner (not just Contributor) because the Functions host's own use of
// AzureWebJobsStorage (leases, timer locks, host secrets) is documented to need it.
resource appBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Queue Data Contributor covers peek/receive/delete (and so Message Processor) plus
// creating the poison queue, which the host does on first use.
resource appQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, appIdentity.id, roles.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Entra ID telemetry ingestion (the component has DisableLocalAuth): the app and the
// Functions host send a token for this identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).
resource appTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appIdentity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Set Blob Service Properties (the static website switch) is a data-plane call whose Entra
// authorisation checks Microsoft.Storage/storageAccounts/blobServices/write, which Storage
// Account Contributor carries. Storage Blob Data Contributor is added so the script also works
// should the service check a data action instead (this could not be tried from the build
// machine). Both are on the page's account, which holds only the page; the role stays after the
// script has run (a deployment cannot remove what it just used), and that is why it is here
// and not on the data account.
resource deployStorageAccountContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(webStorage.id, deployIdentity.id, roles.storageAccountContributor)
  scope: webStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageAccountContributor)
    principalId: deployIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource deployBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(webStorage.id, deployIdentity.id, roles.storageBlobDataContributor)
  scope: webStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: deployIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The person or pipeline that publishes the page: blob data on $web, nothing else.
resource deployerWebBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(webStorage::blobService::webContainer.id, principalId, roles.storageBlobDataContributor)
  scope: webStorage::blobService::webContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: principalId
    principalType: principalType
  }
}

output appIdentityId string = appIdentity.id
output appIdentityClientId string = appIdentity.properties.clientId
output appIdentityPrincipalId string = appIdentity.properties.principalId
output deployIdentityId string = deployIdentity.id
// Returned so that consumers can depend on the assignments existing before they start.
output appRoleAssignmentIds array = [
  appBlob.id
  appQueue.id
  appTable.id
  appAcrPull.id
  appTelemetry.id
]
output deployRoleAssignmentIds array = [
  deployStorageAccountContributor.id
  deployBlob.id
]
