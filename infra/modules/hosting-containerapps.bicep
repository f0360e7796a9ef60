// Hosting option 'containerapps': the service image (Azure Functions host + our
// function_app) as one plain Azure Container App on the Consumption profile, scaled by KEDA:
//   - a custom azure-queue rule on the job queue, authenticated with the app's managed
//     identity, counting in-flight (invisible) messages too: one replica per job, queued or
//     running (host.json runs one job at a time per instance);
//   - http rule for the API;
//   - minReplicas 0 (the default): nothing runs, and nothing is billed, while the queue is
//     empty and no one is calling the API.
// Why this shape (and not kind=functionapp, Microsoft.Web/sites on ACA, or a Container Apps
// job), and what happens to a job when a replica goes away, is in infra/README.md ("Why this
// hosting", "Scaling and jobs in flight").

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

@description('Application Insights component; its connection string is read here, never passed around as an output.')
param appInsightsName string

param storageAccountName string
param jobsQueue string
param webhooksQueue string

@secure()
@description('WEBHOOK_SECRET, kept as a Container Apps secret; empty: none.')
param webhookSecret string = ''

@description('Port the Functions host listens on inside the image (ASPNETCORE_URLS in the Dockerfile).')
param targetPort int = 8080

param tags object = {}

@description('Tags of the container app only (azd finds the service by azd-service-name).')
param appTags object = {}

// The Functions host derives its host id from the machine name unless it runs on App Service
// or in a Container Apps *functions* environment; in a plain container app every replica would
// get its own id, so the timer would stop being a singleton across replicas and
// azure-webjobs-hosts would fill with per-replica state. One id for the app (at most 32
// lowercase letters, digits and dashes, per the host's rules).
var hostId = take(toLower(appName), 32)

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

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
  tags: union(tags, appTags)
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
      secrets: empty(webhookSecret) ? [] : [
        {
          name: 'webhook-secret'
          value: webhookSecret
        }
      ]
    }
    template: {
      // A replica told to stop (scale-in, new revision, restart) gets SIGTERM. The Functions
      // host does not wait for the Python function: it stops the worker within seconds, the
      // invocation fails and the host puts the message back (visible again after host.json's
      // visibilityTimeout); the next delivery takes the job over once its lease has run out.
      // A longer grace period would not let the job finish; 60 s leaves the host time to
      // release the message and flush telemetry. infra/README.md, "Scaling and jobs in flight".
      terminationGracePeriodSeconds: 60
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
              // Not a secret any more: the component accepts Entra ID ingestion only, so the
              // instrumentation key in it grants nothing without the identity's token.
              name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
              value: appInsights.properties.ConnectionString
            }
            {
              name: 'AzureFunctionsWebHost__hostid'
              value: hostId
            }
          ], empty(webhookSecret) ? [] : [
            {
              name: 'WEBHOOK_SECRET'
              secretRef: 'webhook-secret'
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
        // Polls the queue every 15 s; the last replica goes 5 minutes after every rule went
        // quiet.
        pollingInterval: 15
        cooldownPeriod: 300
        rules: [
          {
            // A custom azure-queue rule rather than the built-in azureQueue one, which cannot
            // carry queueLengthStrategy. 'all' counts invisible messages too (a job being
            // processed keeps its message invisible), so a replica working on a job is still
            // wanted by the scaler. KEDA reads this key from 2.16 on (where 'all' is also the
            // default); older KEDA ignores it and counts only visible messages while fewer
            // than 32 are queued: then redelivery, not the scaler, keeps the job (README).
            name: 'restore-jobs-queue'
            custom: {
              type: 'azure-queue'
              identity: appIdentityId
              metadata: {
                accountName: storageAccountName
                queueName: jobsQueue
                queueLength: '1'
                queueLengthStrategy: 'all'
              }
            }
          }
          {
            // Webhook retries wait invisible for up to 45 minutes: only a visible one (due now)
            // needs a replica to deliver it.
            name: 'restore-webhooks-queue'
            custom: {
              type: 'azure-queue'
              identity: appIdentityId
              metadata: {
                accountName: storageAccountName
                queueName: webhooksQueue
                queueLength: '1'
                queueLengthStrategy: 'visibleonly'
              }
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
output appId string = app.id
output hostId string = hostId
output apiUrl string = 'https://${app.properties.configuration.ingress.fqdn}'
output environmentId string = managedEnvironment.id
