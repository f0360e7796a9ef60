// Alerts and a workbook on the service's telemetry.
//
// The app emits OpenTelemetry metrics that Application Insights stores in `customMetrics`
// (name, value, valueCount, valueSum, valueMax, customDimensions): restore.jobs (outcome,
// error_code), restore.poisoned_messages, restore.stage.duration (stage), restore.queue.wait,
// restore.job.duration, restore.faces, restore.refusals (http.status_code, error_code) and
// restore.queue.depth. The log alerts and the workbook query exactly those names; 5xx answers
// and replica restarts come from the platform's own metrics, which count each answer once
// whatever the app's telemetry does.

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

resource failedJobsAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
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

resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
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

resource queueWaitAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
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

// --- platform metric alerts: 5xx answers and replica restarts ---------------------------
// Container Apps: Requests (statusCodeCategory 5xx) and RestartCount. Elastic Premium has no
// restart count; the closest signal is the health check (HealthCheckStatus below 100 means an
// instance failed /api/health, and App Service replaces instances that keep failing it).

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

resource restartsAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = if (hasApp) {
  name: 'face-restore-replica-restarts'
  location: 'global'
  tags: tags
  properties: {
    description: (hosting == 'containerapps') ? 'A replica restarted (RestartCount): a crash, an out-of-memory kill, or failing probes. Its job is redelivered (infra/README.md).' : 'An instance failed its health check (HealthCheckStatus below 100); App Service replaces instances that keep failing it.'
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
          name: 'replica-restarts'
          metricNamespace: 'Microsoft.App/containerApps'
          metricName: 'RestartCount'
          timeAggregation: 'Maximum'
          operator: 'GreaterThan'
          threshold: 0
        } : {
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
