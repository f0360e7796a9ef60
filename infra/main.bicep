// Face restoration service: everything in Azure, in one resource group.
//
//   azd up                                         (azure.yaml, main.parameters.json), or
//   az deployment group create -g <rg> -f infra/main.bicep -p namePrefix=facefix hosting=containerapps image=<acr>/face-restore:<tag>
//
// Deploy once with image='' (the default): everything, and on containerapps the app with a
// public placeholder image (or, when it exists already, the image it runs); build the image into
// the registry (az acr build, or azd's remote build); then either deploy again with image set
// (infra/deploy.sh) or let `azd deploy` put the new image on the app it finds by its
// azd-service-name tag (azd's container-app shape, no Bicep in that step). infra/README.md says
// why, and writes every command out.

targetScope = 'resourceGroup'

@description('azd environment name (AZURE_ENV_NAME); tags every resource azd-env-name when set. Empty outside azd.')
@maxLength(64)
param environmentName string = ''

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Short name (2-12 lowercase letters, digits, hyphens; starts with a letter) prefixed to every resource name.')
@minLength(2)
@maxLength(12)
param namePrefix string = 'facefix'

@description('containerapps: Azure Container Apps, scale to zero (default). premium: Azure Functions Elastic Premium, one always-ready instance.')
@allowed([
  'containerapps'
  'premium'
])
param hosting string = 'containerapps'

@description('Full image reference, e.g. myacr.azurecr.io/face-restore:20250101-abc123. Empty: keep the image the app runs now (appExists); otherwise the container app starts on a public placeholder until the first deploy (premium: no app until an image is given).')
param image string = ''

@description('The container app exists already (azd sets SERVICE_APP_RESOURCE_EXISTS): with image empty, re-provisioning keeps the image it runs instead of leaving the app out or resetting it.')
param appExists bool = false

@description('vCPU per Container Apps replica (containerapps only).')
param cpu string = '2.0'

@description('Memory per Container Apps replica (containerapps only); Consumption needs 2 GiB per vCPU.')
param memory string = '4Gi'

@description('Replicas kept running while idle (containerapps only). 0: scale to zero, with a cold start on the next use.')
@minValue(0)
@maxValue(10)
param minReplicas int = 0

@description('Upper bound on instances/replicas; each one runs one job at a time.')
@minValue(1)
@maxValue(100)
param maxInstances int = 5

@description('Days after which uploads/ and results/ blobs are deleted by lifecycle rules; the app purges jobs after the same period (in hours).')
@minValue(1)
@maxValue(365)
param retentionDays int = 1

@description('Elastic Premium plan size (premium only).')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param premiumSku string = 'EP1'

@description('Container registry tier.')
@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param registrySku string = 'Basic'

@description('Enable the static website with a deployment script. Set false where policy forbids the script\'s temporary shared-key storage account, and run the command from infra/README.md instead.')
param enableStaticWebsiteScript bool = true

@description('Object id of whoever deploys (azd: AZURE_PRINCIPAL_ID; az ad signed-in-user show --query id -o tsv); gets Storage Blob Data Contributor on the page\'s $web container, nothing else. Empty: no assignment.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('E-mail address for the alerts (action group). Empty: the alerts exist but notify no one.')
param alertEmail string = ''

@description('Daily ingestion cap of the Log Analytics workspace, in GB.')
@minValue(1)
param logDailyCapGb int = 1

@description('Failed jobs within 15 minutes at which the failed-jobs alert fires.')
@minValue(1)
param failedJobsAlertThreshold int = 5

@description('Queue wait (enqueue to claimed by a worker) in seconds above which the queue-wait alert fires.')
@minValue(1)
param queueWaitAlertSeconds int = 300

@description('5xx answers within 15 minutes above which the 5xx alert fires.')
@minValue(0)
param serverErrorAlertThreshold int = 5

@description('Availability test on /api/health from five regions every 5 minutes, with an alert when three fail: the one alert that fires when no replica runs at all. Its requests keep a scale-to-zero app awake (about the cost of minReplicas=1); false keeps true scale to zero (infra/README.md, "Alerts").')
param availabilityTest bool = true

@description('Most faces restored per image.')
param maxFaces int = 10

@description('Largest accepted upload in bytes.')
param maxUploadBytes int = 20971520

@description('Largest accepted image in pixels (width x height).')
param maxPixels int = 40000000

@description('Jobs waiting in the queue beyond which new uploads are refused with 503.')
param maxQueueDepth int = 500

param tags object = {
  app: 'face-restore'
}

// azd finds its environment's resources by azd-env-name and the app by azd-service-name.
var allTags = empty(environmentName) ? tags : union(tags, {
  'azd-env-name': environmentName
})
var azdServiceName = 'app'

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------
var suffix = take(uniqueString(subscription().id, resourceGroup().id, namePrefix), 6)
var compactPrefix = toLower(replace(namePrefix, '-', ''))
var names = {
  storage: '${take(compactPrefix, 14)}st${suffix}'
  webStorage: '${take(compactPrefix, 14)}web${suffix}'
  registry: '${take(compactPrefix, 20)}acr${suffix}'
  workspace: '${namePrefix}-log'
  appInsights: '${namePrefix}-appi'
  appIdentity: '${namePrefix}-id-app'
  deployIdentity: '${namePrefix}-id-deploy'
  environment: '${namePrefix}-cae'
  containerApp: '${namePrefix}-app'
  plan: '${namePrefix}-plan'
  site: '${namePrefix}-func-${suffix}'
}

var jobsQueue = 'restore-jobs'
var jobsTable = 'jobs'
var uploadsContainer = 'uploads'
var resultsContainer = 'results'
// The container app is always deployed: azd's deploy step finds it by its azd-service-name tag
// and only swaps its image, so it must exist after the first provision. Until then it runs a
// public placeholder that does not listen on targetPort (its replicas fail the startup probe for
// the minutes until `azd deploy`); a re-provision keeps the image the app runs
// (modules/existing-image.bicep). Premium needs a real image to start a site. Decided from
// parameters only, as ARM needs.
var deployApp = !empty(image) || hosting == 'containerapps'
// The image Azure-Samples' azd container-app templates start from.
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'

// ---------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------
module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    workspaceName: names.workspace
    appInsightsName: names.appInsights
    dailyCapGb: logDailyCapGb
    tags: allTags
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  params: {
    location: location
    name: names.registry
    sku: registrySku
    tags: allTags
  }
}

// Two accounts: the data account (the app's alone) and the page's account (static website).
module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    name: names.storage
    retentionDays: retentionDays
    uploadsContainer: uploadsContainer
    resultsContainer: resultsContainer
    jobsQueue: jobsQueue
    jobsTable: jobsTable
    workspaceId: monitoring.outputs.workspaceId
    tags: allTags
  }
}

// The static website's endpoint is fixed when the account is created (before the website is
// switched on), so the app's CORS setting can use it right away.
module webStorage 'modules/web-storage.bicep' = {
  name: 'web-storage'
  params: {
    location: location
    name: names.webStorage
    tags: allTags
  }
}

var webEndpoint = webStorage.outputs.webEndpoint
var siteOrigin = webStorage.outputs.webOrigin

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    location: location
    appIdentityName: names.appIdentity
    deployIdentityName: names.deployIdentity
    storageAccountName: storage.outputs.name
    webStorageAccountName: webStorage.outputs.name
    webContainerName: webStorage.outputs.webContainerName
    registryName: registry.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    principalId: principalId
    principalType: principalType
    tags: allTags
  }
}

module staticWebsite 'modules/static-website.bicep' = if (enableStaticWebsiteScript) {
  name: 'static-website'
  params: {
    location: location
    storageAccountName: webStorage.outputs.name
    deployIdentityId: identity.outputs.deployIdentityId
    tags: allTags
  }
}

// ---------------------------------------------------------------------------------------
// App settings: identity-based storage connection only (no keys, no connection strings).
// ---------------------------------------------------------------------------------------
var premiumCores = {
  EP1: 1
  EP2: 2
  EP3: 4
}
var engineThreads = (hosting == 'premium') ? premiumCores[premiumSku] : max(1, int(split(cpu, '.')[0]))

var appSettings = [
  {
    name: 'FUNCTIONS_WORKER_RUNTIME'
    value: 'python'
  }
  {
    name: 'FUNCTIONS_EXTENSION_VERSION'
    value: '~4'
  }
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storage.outputs.name
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: storage.outputs.blobEndpoint
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: storage.outputs.queueEndpoint
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: storage.outputs.tableEndpoint
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identity.outputs.appIdentityClientId
  }
  {
    // Other Azure SDK clients' DefaultAzureCredential picks the user-assigned identity from this; the app's own
    // storage and telemetry clients take it from AzureWebJobsStorage__clientId and the authentication string.
    name: 'AZURE_CLIENT_ID'
    value: identity.outputs.appIdentityClientId
  }
  {
    name: 'JOBS_QUEUE'
    value: jobsQueue
  }
  {
    name: 'JOBS_TABLE'
    value: jobsTable
  }
  {
    name: 'UPLOADS_CONTAINER'
    value: uploadsContainer
  }
  {
    name: 'RESULTS_CONTAINER'
    value: resultsContainer
  }
  {
    // The exported model store baked into the image (Dockerfile); read-only, never written.
    name: 'MODELS_DIR'
    value: '/opt/models'
  }
  {
    name: 'STANDIN_WEIGHTS'
    value: 'false'
  }
  {
    // Container Apps ingress / the App Service front end put the caller's address in
    // X-Forwarded-For; without it every anonymous caller would share one rate-limit bucket.
    name: 'TRUST_FORWARDED_FOR'
    value: 'true'
  }
  {
    // The engine's thread count (the app still reads TORCH_THREADS as an alias).
    name: 'ENGINE_THREADS'
    value: string(engineThreads)
  }
  {
    name: 'MAX_FACES'
    value: string(maxFaces)
  }
  {
    name: 'JOB_RETENTION_HOURS'
    value: string(retentionDays * 24)
  }
  {
    name: 'CORS_ORIGINS'
    value: siteOrigin
  }
  {
    name: 'MAX_UPLOAD_BYTES'
    value: string(maxUploadBytes)
  }
  {
    name: 'MAX_PIXELS'
    value: string(maxPixels)
  }
  {
    name: 'MAX_QUEUE_DEPTH'
    value: string(maxQueueDepth)
  }
  // Telemetry. The app calls configure_azure_monitor itself, so the Python worker's own
  // switch (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY) stays unset: both would report.
  // APPLICATIONINSIGHTS_CONNECTION_STRING is added by the hosting module, which reads it from
  // the component (no deployment output carries it).
  {
    // Entra ID ingestion with the app's user-assigned identity, for the app's exporter and
    // the Functions host alike (the component refuses key-only ingestion).
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identity.outputs.appIdentityClientId};Authorization=AAD'
  }
  {
    name: 'OTEL_SERVICE_NAME'
    value: 'face-restore'
  }
  {
    name: 'LOG_FORMAT'
    value: 'json'
  }
]

// ---------------------------------------------------------------------------------------
// Hosting
// ---------------------------------------------------------------------------------------
// Re-provisioning without an image (azd provision, appExists): the image the app runs now.
module existingImage 'modules/existing-image.bicep' = if (empty(image) && appExists && hosting == 'containerapps') {
  name: 'existing-image'
  params: {
    exists: appExists
    name: names.containerApp
  }
}

var appImage = !empty(image) ? image : (appExists ? existingImage.outputs.image : placeholderImage)

module containerApps 'modules/hosting-containerapps.bicep' = if (deployApp && (hosting == 'containerapps')) {
  name: 'hosting-containerapps'
  params: {
    location: location
    environmentName: names.environment
    appName: names.containerApp
    image: appImage
    registryLoginServer: registry.outputs.loginServer
    appIdentityId: identity.outputs.appIdentityId
    workspaceId: monitoring.outputs.workspaceId
    cpu: cpu
    memory: memory
    minReplicas: minReplicas
    maxReplicas: maxInstances
    env: appSettings
    appInsightsName: monitoring.outputs.appInsightsName
    storageAccountName: storage.outputs.name
    jobsQueue: jobsQueue
    tags: allTags
    appTags: {
      'azd-service-name': azdServiceName
    }
  }
}

module premium 'modules/hosting-premium.bicep' = if (deployApp && (hosting == 'premium')) {
  name: 'hosting-premium'
  params: {
    location: location
    planName: names.plan
    siteName: names.site
    sku: premiumSku
    image: image
    registryLoginServer: registry.outputs.loginServer
    appIdentityId: identity.outputs.appIdentityId
    appIdentityClientId: identity.outputs.appIdentityClientId
    maxInstances: maxInstances
    appSettings: appSettings
    appInsightsName: monitoring.outputs.appInsightsName
    tags: allTags
  }
}

// ---------------------------------------------------------------------------------------
// Alerts, workbook
// ---------------------------------------------------------------------------------------
module observability 'modules/observability.bicep' = {
  name: 'observability'
  params: {
    location: location
    appInsightsId: monitoring.outputs.appInsightsId
    alertEmail: alertEmail
    hosting: hosting
    // The metric alerts need the app to exist first.
    appResourceId: !deployApp ? '' : ((hosting == 'premium') ? premium.outputs.siteId : containerApps.outputs.appId)
    appName: names.containerApp
    workspaceId: monitoring.outputs.workspaceId
    apiUrl: !deployApp ? '' : ((hosting == 'premium') ? premium.outputs.apiUrl : containerApps.outputs.apiUrl)
    availabilityTest: availabilityTest
    failedJobsThreshold: failedJobsAlertThreshold
    queueWaitThresholdSeconds: queueWaitAlertSeconds
    serverErrorThreshold: serverErrorAlertThreshold
    tags: allTags
  }
}

// ---------------------------------------------------------------------------------------
// Outputs: azd saves them in its environment (.azure/<env>/.env) under these names; the hooks
// (infra/hooks/, infra/scripts/) and deploy.sh read the same names. No secrets: the App
// Insights connection string is not among them.
// ---------------------------------------------------------------------------------------
@description('Registry azd pushes to (remote build).')
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer

output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name

@description('The data account (uploads, results, queue, tables).')
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name

@description('The page\'s account; the page is uploaded to its $web container.')
output AZURE_WEB_STORAGE_ACCOUNT_NAME string = webStorage.outputs.name

@description('Base URL of the HTTP API (the routes are under /api); empty until an image is deployed.')
output SERVICE_APP_URI string = !deployApp ? '' : ((hosting == 'premium') ? premium.outputs.apiUrl : containerApps.outputs.apiUrl)

output SERVICE_APP_NAME string = !deployApp ? '' : ((hosting == 'premium') ? names.site : names.containerApp)

@description('The page, served by the page account\'s static website.')
output SITE_URL string = webEndpoint

output SITE_ORIGIN string = siteOrigin

@description('false: the deployment script did not switch the static website on; the publish step does.')
output STATIC_WEBSITE_BY_SCRIPT bool = enableStaticWebsiteScript

output APP_IDENTITY_CLIENT_ID string = identity.outputs.appIdentityClientId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output HOSTING string = hosting
