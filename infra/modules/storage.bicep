// The service's data account: uploads and results (Blob), the job queue and its poison queue
// (Queue), the job table (Table). The page lives in an account of its own
// (modules/web-storage.bicep), so nobody but the app's identity holds a data role here and no
// deployment step touches this account.
// Keyless by construction: shared-key access is off, so every caller (the app, the Functions
// host, the KEDA scaler) authenticates with Microsoft Entra ID.

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

@description('Queue of webhook deliveries (processing/jobs/webhooks.py).')
param webhooksQueue string = 'restore-webhooks'

@description('Table holding one row per job.')
param jobsTable string = 'jobs'

@description('Log Analytics workspace that receives the account\'s logs (blob, queue, table) and transaction metrics.')
param workspaceId string

param tags object = {}

// The account is reachable from the internet because Container Apps (Consumption) and
// Functions Premium without a VNet reach it over public endpoints (their outbound addresses are
// neither fixed nor a trusted service), and so does the KEDA scaler. Access control is Entra ID
// RBAC, not the network; infra/README.md ("Network") says what closing it takes.
resource account 'Microsoft.Storage/storageAccounts@2024-01-01' = {
  //checkov:skip=CKV_AZURE_35:Container Apps (Consumption) and Functions Premium without VNet integration reach the account over its public endpoint (no fixed outbound addresses to allow); every request is authorised by Entra ID RBAC (shared key off) and only the app identity holds a data role. A VNet with private endpoints is the upgrade path (infra/README.md, Network).
  //checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: the keyless data endpoints must be reachable by the app without a VNet; anonymous blob access and shared-key access are off.
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

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2024-01-01' = {
  parent: account
  name: 'default'
  properties: {
    // No blob soft delete on purpose: uploads are people's photos, and "deleted" (DELETE
    // /api/jobs/{id}, the purge timer, lifecycle rules) must mean gone, not kept 7 more days.
    deleteRetentionPolicy: {
      enabled: false
    }
    // No CORS: browsers never talk to this account (results are streamed through the API).
    cors: {
      corsRules: []
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

resource webhooks 'Microsoft.Storage/storageAccounts/queueServices/queues@2024-01-01' = {
  parent: queueService
  name: webhooksQueue
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

// Storage logs (who read, wrote, deleted what, with which identity) and transaction metrics
// to Log Analytics: one setting per service, and the account's own metrics.
resource accountDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
  properties: {
    workspaceId: workspaceId
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
