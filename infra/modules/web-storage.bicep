// The page's own storage account: only the static website ($web: index.html, app.js,
// config.js ...). Nothing else lives here, so the roles that publishing needs (the deployment
// script's Storage Account Contributor to switch the website on, the deployer's blob data role
// to upload the page) reach no one's photos; the data account (modules/storage.bicep) is the
// app's alone.

@description('Azure region.')
param location string

@description('Globally unique storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

param tags object = {}

// Public by nature: the static website endpoint serves the page to everyone's browser.
resource account 'Microsoft.Storage/storageAccounts@2024-01-01' = {
  //checkov:skip=CKV_AZURE_35:This account serves only the public page through its static website endpoint, which browsers everywhere must reach; it holds no user data, and uploads to it need an Entra ID role on the $web container (shared key off).
  //checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: the static website is the public page; anonymous blob access and shared-key access are off, so only the website endpoint serves content anonymously.
  //checkov:skip=CKV_AZURE_206:The page is rebuilt from the repository by every deployment (azd deploy / deploy.sh); losing a zone loses nothing that is not in git. LRS by choice.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

// https://<account>.<zone>.web.<suffix>/ -> https://<account>.<zone>.web.<suffix>
// (fixed when the account is created, before the website is switched on, so the app's CORS
// setting can use it right away).
var webEndpoint = account.properties.primaryEndpoints.web
var webOrigin = endsWith(webEndpoint, '/') ? substring(webEndpoint, 0, length(webEndpoint) - 1) : webEndpoint

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2024-01-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: false
    }
  }
}

// The static website's container, declared here (switching the website on adopts it) so the
// deployer's blob data role can be scoped to it rather than to the account.
resource web 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = {
  parent: blobService
  name: '$web'
  properties: {
    publicAccess: 'None'
  }
}

output id string = account.id
output name string = account.name
output webContainerName string = web.name
output webEndpoint string = webEndpoint
output webOrigin string = webOrigin
