// Log Analytics workspace (container and platform logs, storage logs) and a workspace-based
// Application Insights (the app's OpenTelemetry metrics, spans and logs; the Functions host's
// own telemetry).
//
// Ingestion is Microsoft Entra ID only (DisableLocalAuth): the connection string's
// instrumentation key alone can no longer write telemetry; the app's user-assigned identity
// holds Monitoring Metrics Publisher on the component (modules/identity.bicep) and sends a
// token (APPLICATIONINSIGHTS_AUTHENTICATION_STRING). No output of this module carries the
// connection string: the hosting modules read it from the component themselves.

param location string
param workspaceName string
param appInsightsName string

@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Daily ingestion cap of the Log Analytics workspace in GB; ingestion stops for the rest of the UTC day once reached (the workspace raises an operational event).')
@minValue(1)
param dailyCapGb int = 1

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
    workspaceCapping: {
      dailyQuotaGb: dailyCapGb
    }
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
    // No RetentionInDays: a workspace-based component keeps its data in the workspace, for the
    // workspace's retentionInDays (the component's own setting is ignored).
    // Entra ID ingestion only: telemetry without a token for an identity that holds
    // Monitoring Metrics Publisher on this component is refused.
    DisableLocalAuth: true
  }
}

output workspaceId string = workspace.id
output workspaceName string = workspace.name
output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
