// Face restoration service: everything in Azure, in one resource group.
//
//   az deployment group create -g <rg> -f infra/main.bicep -p namePrefix=facefix hosting=containerapps image=<acr>/face-restore:<tag>
//
// Deploy once with image='' (the default) to create the registry and everything that does not
// run code; build the image into the registry (az acr build); deploy again with image set.
// infra/deploy.sh does exactly that; infra/README.md writes every command out.

targetScope = 'resourceGroup'

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

@description('Full image reference, e.g. myacr.azurecr.io/face-restore:20250101-abc123. Empty: deploy everything except the app (first pass, before the image exists).')
param image string = ''

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

@description('Object id of whoever deploys (az ad signed-in-user show --query id -o tsv); gets Storage Blob Data Contributor to upload the page. Empty: no assignment.')
param deployerPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

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

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------
var suffix = take(uniqueString(subscription().id, resourceGroup().id, namePrefix), 6)
var compactPrefix = toLower(replace(namePrefix, '-', ''))
var names = {
  storage: '${take(compactPrefix, 14)}st${suffix}'
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
var deployApp = !empty(image)

// ---------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------
module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    workspaceName: names.workspace
    appInsightsName: names.appInsights
    tags: tags
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  params: {
    location: location
    name: names.registry
    sku: registrySku
    tags: tags
  }
}

// The static website's endpoint is fixed when the account is created (before the website is
// switched on), so the app's CORS setting and the blob CORS rule can use it right away.
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
    allowWebsiteOrigin: true
    tags: tags
  }
}

var webEndpoint = storage.outputs.webEndpoint
var siteOrigin = storage.outputs.webOrigin

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    location: location
    appIdentityName: names.appIdentity
    deployIdentityName: names.deployIdentity
    storageAccountName: storage.outputs.name
    registryName: registry.outputs.name
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
    tags: tags
  }
}

module staticWebsite 'modules/static-website.bicep' = if (enableStaticWebsiteScript) {
  name: 'static-website'
  params: {
    location: location
    storageAccountName: storage.outputs.name
    deployIdentityId: identity.outputs.deployIdentityId
    tags: tags
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
var torchThreads = (hosting == 'premium') ? premiumCores[premiumSku] : max(1, int(split(cpu, '.')[0]))

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
    // DefaultAzureCredential (azure-identity) picks the user-assigned identity from this.
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
    name: 'WEIGHTS_DIR'
    value: '/opt/weights'
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
    name: 'TORCH_THREADS'
    value: string(torchThreads)
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
]

// ---------------------------------------------------------------------------------------
// Hosting
// ---------------------------------------------------------------------------------------
module containerApps 'modules/hosting-containerapps.bicep' = if (deployApp && (hosting == 'containerapps')) {
  name: 'hosting-containerapps'
  params: {
    location: location
    environmentName: names.environment
    appName: names.containerApp
    image: image
    registryLoginServer: registry.outputs.loginServer
    appIdentityId: identity.outputs.appIdentityId
    workspaceId: monitoring.outputs.workspaceId
    cpu: cpu
    memory: memory
    minReplicas: minReplicas
    maxReplicas: maxInstances
    env: appSettings
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    storageAccountName: storage.outputs.name
    jobsQueue: jobsQueue
    tags: tags
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
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    tags: tags
  }
}

// ---------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------
@description('Base URL of the HTTP API (the routes are under /api); empty until an image is deployed.')
output apiUrl string = !deployApp ? '' : ((hosting == 'premium') ? premium.outputs.apiUrl : containerApps.outputs.apiUrl)

@description('The page, served by the storage account\'s static website.')
output siteUrl string = webEndpoint

output siteOrigin string = siteOrigin
output registryName string = registry.outputs.name
output registryLoginServer string = registry.outputs.loginServer
output storageAccountName string = storage.outputs.name
output identityClientId string = identity.outputs.appIdentityClientId
output appName string = !deployApp ? '' : ((hosting == 'premium') ? names.site : names.containerApp)
output hosting string = hosting
