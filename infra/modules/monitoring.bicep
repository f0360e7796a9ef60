// Log Analytics workspace (container and platform logs) and a workspace-based Application
// Insights (requests, traces, exceptions from the Functions host and our code).

param location string
param workspaceName string
param appInsightsName string

@minValue(30)
@maxValue(730)
param retentionInDays int = 30

param tags object = {}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    RetentionInDays: retentionInDays
  }
}

output workspaceId string = workspace.id
output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
// A connection string for ingestion (instrumentation key + endpoints). It grants write-only
// telemetry ingestion, not access to data or to any storage account.
output appInsightsConnectionString string = appInsights.properties.ConnectionString
