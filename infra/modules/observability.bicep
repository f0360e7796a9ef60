// Alerts and a workbook on the service's telemetry.
//
// The app emits OpenTelemetry metrics that Application Insights stores in `customMetrics`
// (name, value, valueCount, valueSum, valueMax, customDimensions): restore.jobs (outcome,
// error_code), restore.poisoned_messages, restore.stage.duration (stage), restore.queue.wait,
// restore.job.duration, restore.faces, restore.refusals (http.status_code, error_code) and
// restore.queue.depth. The log alerts and the workbook query exactly those names. What the app
// cannot report, because it is not running, comes from outside it: 5xx answers from the
// platform's request metric, crashing or unstartable replicas from the Container Apps system
// logs, and "the API does not answer at all" from an availability test on /api/health.
// infra/README.md ("Alerts") has the table: each alert, the failure it catches, how soon.

param location string
param appInsightsId string

@description('E-mail address that receives the alerts. Empty: the alerts exist (and show in the portal) but notify no one.')
param alertEmail string = ''

@description('containerapps or premium: which platform metrics the 5xx and restart alerts use.')
@allowed([
  'containerapps'
  'premium'
])
param hosting string

@description('Resource id of the container app or function app; empty while no app is deployed (then no metric alerts).')
param appResourceId string = ''

@description('Name of the container app (containerapps): the replica-failure alert reads its system logs.')
param appName string = ''

@description('Log Analytics workspace that receives the Container Apps environment\'s system logs.')
param workspaceId string

@description('Base URL of the API (https://...); empty while no app is deployed (then no availability test).')
param apiUrl string = ''

@description('Run an availability test on /api/health from five regions every 5 minutes, with an alert when three fail. Its requests keep a scale-to-zero app awake (infra/README.md, "Alerts").')
param availabilityTest bool = true

@description('Failed jobs within 15 minutes at which the failed-jobs alert fires.')
@minValue(1)
param failedJobsThreshold int = 5

@description('Longest queue wait (enqueue to claimed by a worker), in seconds, above which the queue-wait alert fires.')
@minValue(1)
param queueWaitThresholdSeconds int = 300

@description('5xx answers within 15 minutes above which the 5xx alert fires.')
@minValue(0)
param serverErrorThreshold int = 5

param tags object = {}

var window = 'PT15M'
var frequency = 'PT5M'
var hasApp = !empty(appResourceId)
var notify = !empty(alertEmail)
var probeApi = availabilityTest && !empty(apiUrl)

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: 'face-restore-alerts'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'facerestore'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var logAlertActions = notify ? {
  actionGroups: [
    actionGroup.id
  ]
} : {}
var metricAlertActions = notify ? [
  {
    actionGroupId: actionGroup.id
  }
] : []

// --- log alerts on the app's metrics (App Insights `customMetrics`) ---------------------

var failedJobsQuery = '''
customMetrics
| where name == "restore.jobs"
| where tostring(customDimensions["outcome"]) == "failed"
| summarize failed = sum(valueSum)
'''

var poisonQuery = '''
customMetrics
| where name == "restore.poisoned_messages"
| summarize poisoned = sum(valueSum)
'''

var queueWaitQuery = '''
customMetrics
| where name == "restore.queue.wait"
| summarize wait_max_s = max(valueMax)
'''

resource failedJobsAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'face-restore-failed-jobs'
  location: location
  tags: tags
  properties: {
    displayName: 'Face restore: failed jobs'
    description: 'At least ${failedJobsThreshold} jobs ended failed within 15 minutes (restore.jobs, outcome=failed). The workbook breaks them down by error_code.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: frequency
    windowSize: window
    criteria: {
      allOf: [
        {
          query: failedJobsQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'failed'
          operator: 'GreaterThanOrEqual'
          threshold: failedJobsThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logAlertActions
  }
}

resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'face-restore-poison-messages'
  location: location
  tags: tags
  properties: {
    displayName: 'Face restore: poison messages'
    description: 'A job message reached the poison queue (restore.poisoned_messages): a job failed after every delivery attempt.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: frequency
    windowSize: window
    criteria: {
      allOf: [
        {
          query: poisonQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'poisoned'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logAlertActions
  }
}

resource queueWaitAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'face-restore-queue-wait'
  location: location
  tags: tags
  properties: {
    displayName: 'Face restore: queue wait'
    description: 'A job waited more than ${queueWaitThresholdSeconds} s between enqueue and a worker claiming it (restore.queue.wait): too few replicas, or none starting.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: frequency
    windowSize: window
    criteria: {
      allOf: [
        {
          query: queueWaitQuery
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'wait_max_s'
          operator: 'GreaterThan'
          threshold: queueWaitThresholdSeconds
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logAlertActions
  }
}

// --- platform metric alerts: 5xx answers; the health check on Premium -------------------

resource serverErrorsAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = if (hasApp) {
  name: 'face-restore-5xx'
  location: 'global'
  tags: tags
  properties: {
    description: 'More than ${serverErrorThreshold} answers with a 5xx status within 15 minutes (platform request metric).'
    severity: 2
    enabled: true
    scopes: [
      appResourceId
    ]
    evaluationFrequency: frequency
    windowSize: window
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        (hosting == 'containerapps') ? {
          criterionType: 'StaticThresholdCriterion'
          name: 'server-errors'
          metricNamespace: 'Microsoft.App/containerApps'
          metricName: 'Requests'
          dimensions: [
            {
              name: 'statusCodeCategory'
              operator: 'Include'
              values: [
                '5xx'
              ]
            }
          ]
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: serverErrorThreshold
        } : {
          criterionType: 'StaticThresholdCriterion'
          name: 'server-errors'
          metricNamespace: 'Microsoft.Web/sites'
          metricName: 'Http5xx'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: serverErrorThreshold
        }
      ]
    }
    autoMitigate: true
    actions: metricAlertActions
  }
}

// Elastic Premium has no restart count; the health check stands in (HealthCheckStatus below
// 100 means an instance failed /api/health, and App Service replaces instances that keep
// failing it). An average over the window: it clears by itself once the instances are healthy.
resource healthCheckAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = if (hasApp && hosting == 'premium') {
  name: 'face-restore-health-check'
  location: 'global'
  tags: tags
  properties: {
    description: 'An instance failed its health check (HealthCheckStatus below 100); App Service replaces instances that keep failing it.'
    severity: 2
    enabled: true
    scopes: [
      appResourceId
    ]
    evaluationFrequency: frequency
    windowSize: window
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'health-check'
          metricNamespace: 'Microsoft.Web/sites'
          metricName: 'HealthCheckStatus'
          timeAggregation: 'Average'
          operator: 'LessThan'
          threshold: 100
        }
      ]
    }
    autoMitigate: true
    actions: metricAlertActions
  }
}

// --- replicas that crash or cannot start (Container Apps system logs) ---------------------
// Not the RestartCount metric: it is a running total per replica (azure-container-apps #467,
// #1384), so an alert on it stays fired for the replica's lifetime after one restart. These are
// the platform's events within the window: restarts after a crash (BackOff), out-of-memory
// kills, and images that cannot be pulled (a bad image or registry access: no replica starts at
// all). Not plain terminations: every scale-in and new revision ends replicas too. Counted per window, so the alert clears 15 quiet minutes
// after the last event.
var replicaFailuresQuery = '''
ContainerAppSystemLogs
| where ContainerAppName == "{app}"
| where Reason in~ ("BackOff", "ContainerCrashing", "ErrImagePull", "ImagePullBackOff", "ImagePullFailure")
    or Log has_any ("Back-off restarting failed container", "OOMKilled", "Failed to pull image")
| summarize failures = count()
'''

resource replicaFailuresAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (hasApp && hosting == 'containerapps') {
  name: 'face-restore-replica-failures'
  location: location
  tags: tags
  properties: {
    displayName: 'Face restore: replicas crashing or not starting'
    description: 'Container Apps system logs report restarts after a crash (BackOff), out-of-memory kills or image pull failures for the app within 15 minutes. Jobs on a crashed replica are redelivered (infra/README.md).'
    severity: 2
    enabled: true
    scopes: [
      workspaceId
    ]
    evaluationFrequency: frequency
    windowSize: window
    criteria: {
      allOf: [
        {
          query: replace(replicaFailuresQuery, '{app}', appName)
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: logAlertActions
  }
}

// --- the API does not answer: a standard availability test from outside --------------------
// The one signal that exists when no replica runs at all (bad image, crash loop, quota): the
// app's own metrics (queue wait, failed jobs) need a running worker to be emitted.
var probeLocations = [
  'emea-nl-ams-azr' // West Europe
  'emea-gb-db3-azr' // North Europe
  'emea-fr-pra-edge' // France Central
  'us-va-ash-azr' // East US
  'apac-sg-sin-azr' // Southeast Asia
]

resource healthTest 'Microsoft.Insights/webtests@2022-06-15' = if (probeApi) {
  name: 'face-restore-health'
  location: location
  // The portal shows a test under its component only with this link.
  tags: union(tags, {
    'hidden-link:${appInsightsId}': 'Resource'
  })
  kind: 'standard'
  properties: {
    SyntheticMonitorId: 'face-restore-health'
    Name: 'Face restore: /api/health'
    Description: 'GET /api/health must answer 200 (503 names storage or the model store).'
    Enabled: true
    Kind: 'standard'
    Frequency: 300
    // A replica woken from zero imports the models first.
    Timeout: 120
    RetryEnabled: true
    Locations: [for id in probeLocations: {
      Id: id
    }]
    Request: {
      RequestUrl: '${apiUrl}/api/health'
      HttpVerb: 'GET'
      ParseDependentRequests: false
    }
    ValidationRules: {
      ExpectedHttpStatusCode: 200
      SSLCheck: true
      SSLCertRemainingLifetimeCheck: 7
    }
  }
}

resource apiUnreachableAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = if (probeApi) {
  name: 'face-restore-api-unreachable'
  location: 'global'
  tags: union(tags, {
    'hidden-link:${appInsightsId}': 'Resource'
    'hidden-link:${healthTest.id}': 'Resource'
  })
  properties: {
    description: '/api/health failed from at least 3 of 5 regions: no replica answers (it cannot start, crashes, or is out of quota), or storage / the model store is unusable (503).'
    severity: 1
    enabled: true
    scopes: [
      healthTest.id
      appInsightsId
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria'
      webTestId: healthTest.id
      componentId: appInsightsId
      failedLocationCount: length(probeLocations) - 2
    }
    autoMitigate: true
    actions: metricAlertActions
  }
}

// --- workbook ----------------------------------------------------------------------------

var throughputQuery = '''
customMetrics
| where name == "restore.jobs"
| extend outcome = tostring(customDimensions["outcome"])
| summarize jobs = sum(valueSum) by outcome, bin(timestamp, 5m)
| render timechart
'''

var stageLatencyQuery = '''
customMetrics
| where name == "restore.stage.duration"
| extend stage = tostring(customDimensions["stage"])
| summarize mean_s = sum(valueSum) / sum(valueCount) by stage, bin(timestamp, 15m)
| render timechart
'''

var stageTableQuery = '''
customMetrics
| where name == "restore.stage.duration"
| extend stage = tostring(customDimensions["stage"])
| summarize runs = sum(valueCount), mean_s = round(sum(valueSum) / sum(valueCount), 3), max_s = round(max(valueMax), 3) by stage
| order by mean_s desc
'''

var jobLatencyQuery = '''
customMetrics
| where name in ("restore.queue.wait", "restore.job.duration")
| summarize mean_s = sum(valueSum) / sum(valueCount), max_s = max(valueMax) by name, bin(timestamp, 15m)
| render timechart
'''

var failuresQuery = '''
customMetrics
| where name == "restore.jobs"
| where tostring(customDimensions["outcome"]) == "failed"
| extend error_code = tostring(customDimensions["error_code"])
| summarize failures = sum(valueSum) by error_code
| order by failures desc
| render barchart
'''

var refusalsQuery = '''
customMetrics
| where name == "restore.refusals"
| extend status = tostring(customDimensions["http.status_code"]), error_code = tostring(customDimensions["error_code"])
| summarize refusals = sum(valueSum) by status, error_code
| order by refusals desc
'''

var queueDepthQuery = '''
customMetrics
| where name == "restore.queue.depth"
| summarize depth = max(valueMax) by bin(timestamp, 5m)
| render timechart
'''

var facesQuery = '''
customMetrics
| where name == "restore.faces"
| summarize faces_per_job = sum(valueSum) / sum(valueCount) by bin(timestamp, 1h)
| render timechart
'''

var panels = [
  {
    title: 'Throughput: finished jobs per 5 minutes, by outcome'
    query: throughputQuery
    visualization: 'timechart'
  }
  {
    title: 'Latency per stage: mean seconds'
    query: stageLatencyQuery
    visualization: 'timechart'
  }
  {
    title: 'Stages: runs, mean and longest seconds'
    query: stageTableQuery
    visualization: 'table'
  }
  {
    title: 'Queue wait and job duration (seconds)'
    query: jobLatencyQuery
    visualization: 'timechart'
  }
  {
    title: 'Failures by error code'
    query: failuresQuery
    visualization: 'barchart'
  }
  {
    title: 'Refused submissions by status and error code'
    query: refusalsQuery
    visualization: 'table'
  }
  {
    title: 'Queue depth (messages on the jobs queue)'
    query: queueDepthQuery
    visualization: 'timechart'
  }
  {
    title: 'Faces per job'
    query: facesQuery
    visualization: 'timechart'
  }
]

var panelItems = [for panel in panels: {
  type: 3
  name: panel.title
  content: {
    version: 'KqlItem/1.0'
    query: panel.query
    size: 0
    title: panel.title
    timeContext: {
      durationMs: 86400000
    }
    queryType: 0
    resourceType: 'microsoft.insights/components'
    visualization: panel.visualization
  }
}]

var workbookContent = {
  version: 'Notebook/1.0'
  items: concat([
    {
      type: 1
      name: 'intro'
      content: {
        json: '## Face restore\nJobs, stages, failures and the queue, from the app\'s OpenTelemetry metrics (customMetrics).'
      }
    }
  ], panelItems)
  fallbackResourceIds: [
    appInsightsId
  ]
  '$schema': 'https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json'
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appInsightsId, 'face-restore-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Face restore'
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: string(workbookContent)
  }
}

output actionGroupId string = notify ? actionGroup.id : ''
output workbookId string = workbook.id
