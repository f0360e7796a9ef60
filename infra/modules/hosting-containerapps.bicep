// Hosting option 'containerapps': the service image (Azure Functions host + our
// function_app) as one Azure Container App on the Consumption profile, scaled by KEDA:
//   - azure-queue rule on the job queue, authenticated with the app's managed identity:
//     one replica per waiting job (host.json runs one job at a time per instance);
//   - http rule for the API;
//   - minReplicas 0 (the default): nothing runs, and nothing is billed, while the queue is
//     empty and no one is calling the API.
// Why this shape (and not kind=functionapp, Microsoft.Web/sites on ACA, or a Container Apps
// job) is argued in infra/README.md, "Why this hosting".

param location string
param environmentName string
param appName string
param image string
param registryLoginServer string
param appIdentityId string
param workspaceId string

@description('vCPU per replica, as a string (ARM wants a number with up to two decimals).')
param cpu string

@description('Memory per replica; Consumption needs memory = 2 x cpu, e.g. 2.0 -> 4Gi.')
param memory string

@description('Replicas kept while idle; 0 scales to zero.')
@minValue(0)
param minReplicas int = 0

@minValue(1)
@maxValue(300)
param maxReplicas int

@description('Container environment variables [{name, value}] (identity-based settings, no secrets).')
param env array

@secure()
@description('Application Insights connection string (ingestion only); stored as a Container Apps secret.')
param appInsightsConnectionString string

param storageAccountName string
param jobsQueue string

@description('Port the Functions host listens on inside the image (ASPNETCORE_URLS in the Dockerfile).')
param targetPort int = 8080

param tags object = {}

resource managedEnvironment 'Microsoft.App/managedEnvironments@2025-07-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    // Logs go to Azure Monitor and are routed to the workspace by the diagnostic setting
    // below, so the environment never needs the workspace's shared key.
    appLogsConfiguration: {
      destination: 'azure-monitor'
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
    zoneRedundant: false
  }
}

resource environmentLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: managedEnvironment
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
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

resource app 'Microsoft.App/containerApps@2025-07-01' = {
  name: appName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${appIdentityId}': {}
    }
  }
  properties: {
    environmentId: managedEnvironment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: targetPort
        transport: 'auto'
        allowInsecure: false
        traffic: [
          {
            latestRevision: true
            weight: 100
          }
        ]
        // CORS is answered by the app itself (CORS_ORIGINS, the static website's origin);
        // no corsPolicy here, so browsers never see two Access-Control-Allow-Origin headers.
      }
      registries: [
        {
          server: registryLoginServer
          identity: appIdentityId
        }
      ]
      secrets: [
        {
          name: 'appinsights-connection-string'
          value: appInsightsConnectionString
        }
      ]
    }
    template: {
      // A replica told to stop (scale-in, new revision) lets the running job finish; if it
      // cannot, the message reappears and the next delivery takes the job over.
      terminationGracePeriodSeconds: 300
      containers: [
        {
          name: 'app'
          image: image
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          env: concat(env, [
            {
              name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
              secretRef: 'appinsights-connection-string'
            }
          ])
          probes: [
            {
              // Traffic reaches a replica once the Functions host has loaded function_app
              // and /api/health answers (503 while storage or the weights are unusable).
              type: 'Readiness'
              httpGet: {
                path: '/api/health'
                port: targetPort
              }
              initialDelaySeconds: 5
              periodSeconds: 10
              timeoutSeconds: 5
              failureThreshold: 3
            }
            {
              // Generous (up to 30 + 10 x 15 s): a cold replica imports torch before the host
              // listens. (ARM caps initialDelaySeconds at 60 and failureThreshold at 10.)
              type: 'Startup'
              tcpSocket: {
                port: targetPort
              }
              initialDelaySeconds: 30
              periodSeconds: 15
              timeoutSeconds: 5
              failureThreshold: 10
            }
          ]
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        // Polls the queue every 15 s; an idle replica is removed 5 minutes after the last
        // message (the queue count includes invisible, in-progress messages, so a replica
        // is not removed in the middle of a job).
        pollingInterval: 15
        cooldownPeriod: 300
        rules: [
          {
            name: 'restore-jobs-queue'
            azureQueue: {
              accountName: storageAccountName
              queueName: jobsQueue
              queueLength: 1
              identity: appIdentityId
            }
          }
          {
            name: 'http-requests'
            http: {
              metadata: {
                concurrentRequests: '30'
              }
            }
          }
        ]
      }
    }
  }
}

output appName string = app.name
output apiUrl string = 'https://${app.properties.configuration.ingress.fqdn}'
output environmentId string = managedEnvironment.id
