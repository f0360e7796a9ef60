// The service's one storage account: uploads and results (Blob), the job queue and its
// poison queue (Queue), the job table (Table), and the static website ($web) for the page.
// Keyless by construction: shared-key access is off, so every caller (the app, the
// Functions host, the deployer's CLI) authenticates with Microsoft Entra ID.

@description('Azure region.')
param location string

@description('Globally unique storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Days after which blobs under uploads/ and results/ are deleted by lifecycle management (the backstop behind the app\'s purge timer).')
@minValue(1)
param retentionDays int

@description('Blob container for validated uploads.')
param uploadsContainer string = 'uploads'

@description('Blob container for restored images.')
param resultsContainer string = 'results'

@description('Queue carrying {"job_id": ...} messages to the worker.')
param jobsQueue string = 'restore-jobs'

@description('Table holding one row per job.')
param jobsTable string = 'jobs'

@description('Let the static website\'s origin read blobs cross-origin (result downloads through short-lived SAS links fetched by the page).')
param allowWebsiteOrigin bool = true

param tags object = {}

// The account is reachable from the internet because the page is served from its static
// website endpoint and Container Apps (Consumption) / Functions Premium without a VNet reach
// it over public endpoints. Access control is Entra ID RBAC, not the network.
resource account 'Microsoft.Storage/storageAccounts@2024-01-01' = {
  //checkov:skip=CKV_AZURE_35:Container Apps (Consumption) and Functions Premium without VNet integration reach the account over its public endpoint, and the page is served from its static website; every request is authorised by Entra ID RBAC (shared key off). Private endpoints plus a VNet are the upgrade path (infra/README.md).
  //checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: the static website and the keyless data endpoints must be reachable from the internet; anonymous blob access is off and shared-key access is off.
  //checkov:skip=CKV_AZURE_206:Only short-lived data lives here (uploads and results are deleted after retentionDays, 1 by default); losing a zone loses in-flight jobs, which people resubmit. LRS by choice; switch the sku to Standard_ZRS where the region offers it.
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
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

// https://<account>.<zone>.web.<suffix>/ -> https://<account>.<zone>.web.<suffix>
var webEndpoint = account.properties.primaryEndpoints.web
var webOrigin = endsWith(webEndpoint, '/') ? substring(webEndpoint, 0, length(webEndpoint) - 1) : webEndpoint

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2024-01-01' = {
  parent: account
  name: 'default'
  properties: {
    // No blob soft delete on purpose: uploads are people's photos, and "deleted" (DELETE
    // /api/jobs/{id}, the purge timer, lifecycle rules) must mean gone, not kept 7 more days.
    deleteRetentionPolicy: {
      enabled: false
    }
    cors: {
      corsRules: !allowWebsiteOrigin ? [] : [
        {
          allowedOrigins: [
            webOrigin
          ]
          allowedMethods: [
            'GET'
            'HEAD'
          ]
          allowedHeaders: [
            '*'
          ]
          exposedHeaders: [
            'Content-Length'
            'Content-Type'
          ]
          maxAgeInSeconds: 3600
        }
      ]
    }
  }
}

resource uploads 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = {
  parent: blobService
  name: uploadsContainer
  properties: {
    publicAccess: 'None'
  }
}

resource results 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = {
  parent: blobService
  name: resultsContainer
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2024-01-01' = {
  parent: account
  name: 'default'
}

resource jobs 'Microsoft.Storage/storageAccounts/queueServices/queues@2024-01-01' = {
  parent: queueService
  name: jobsQueue
}

// The Functions host creates "<queue>-poison" on first use; creating it here means the
// poison trigger has a queue to listen on from the start.
resource jobsPoison 'Microsoft.Storage/storageAccounts/queueServices/queues@2024-01-01' = {
  parent: queueService
  name: '${jobsQueue}-poison'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2024-01-01' = {
  parent: account
  name: 'default'
}

resource table 'Microsoft.Storage/storageAccounts/tableServices/tables@2024-01-01' = {
  parent: tableService
  name: jobsTable
}

// Rate-limit buckets and hashed API keys (the app would create them on first use, but its
// identity's data role is not meant to manage tables).
resource rateLimitTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2024-01-01' = {
  parent: tableService
  name: 'ratelimits'
}

resource apiKeysTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2024-01-01' = {
  parent: tableService
  name: 'apikeys'
}

// Lifecycle management: the backstop behind the purge timer (which only runs while an
// instance is up). Rules run about once a day, so a blob lives at most retentionDays + 1 days.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2024-01-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          enabled: true
          name: 'delete-expired-uploads'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${uploadsContainer}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: retentionDays
                }
              }
            }
          }
        }
        {
          enabled: true
          name: 'delete-expired-results'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${resultsContainer}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: retentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    uploads
    results
  ]
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output webEndpoint string = webEndpoint
output webOrigin string = webOrigin
