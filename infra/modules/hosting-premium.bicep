// Hosting option 'premium': an Elastic Premium (EP) plan running the same custom container.
// One always-ready instance (no cold start: the model is loaded and warm), bursting to
// maxInstances as the job queue grows. The Functions scale controller drives the scale-out
// from the queue trigger; runtime scale monitoring makes it ask the host, which reads the queue
// through its identity-based connection, so the platform never needs a storage key.

param location string
param planName string
param siteName string
param image string
param registryLoginServer string
param appIdentityId string
param appIdentityClientId string

@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param sku string = 'EP1'

@minValue(1)
@maxValue(100)
param maxInstances int

@description('App settings [{name, value}] (identity-based settings, no secrets).')
param appSettings array

@description('Application Insights component; its connection string is read here, never passed around as an output.')
param appInsightsName string

@description('Port the Functions host listens on inside the image (ASPNETCORE_URLS in the Dockerfile).')
param containerPort int = 8080

param tags object = {}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:Zone redundancy on Elastic Premium needs at least three always-ready instances; this plan keeps one warm instance on purpose (cost) and bursts on demand. Set zoneRedundant and minimumElasticInstanceCount 3 where that matters.
  name: planName
  location: location
  tags: tags
  kind: 'elastic'
  sku: {
    name: sku
    tier: 'ElasticPremium'
  }
  properties: {
    reserved: true // Linux
    maximumElasticWorkerCount: maxInstances
    zoneRedundant: false
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:The HTTP API is public by design: the static website's page calls it from people's browsers.
  //checkov:skip=CKV_AZURE_17:Client certificates would lock out the browsers that call the public API; requests are anonymous by design (see infra/README.md, security notes).
  //checkov:skip=CKV_AZURE_212:numberOfWorkers applies to dedicated plans; on Elastic Premium capacity is minimumElasticInstanceCount (one always-ready instance, by choice) plus elastic burst to maxInstances. Raise minimumElasticInstanceCount for failover.
  name: siteName
  location: location
  tags: tags
  kind: 'functionapp,linux,container'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${appIdentityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    reserved: true
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      linuxFxVersion: 'DOCKER|${image}'
      acrUseManagedIdentityCreds: true
      acrUserManagedIdentityID: appIdentityClientId
      minimumElasticInstanceCount: 1
      preWarmedInstanceCount: 1
      functionAppScaleLimit: maxInstances
      functionsRuntimeScaleMonitoringEnabled: true
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      alwaysOn: false
      // 503 when storage is unreachable or the weights are missing; App Service replaces an
      // instance that keeps failing it.
      healthCheckPath: '/api/health'
      // CORS is answered by the app itself (CORS_ORIGINS, the static website's origin).
      appSettings: concat(appSettings, [
        {
          // Entra ID ingestion only (DisableLocalAuth), so the key in it grants nothing alone.
          // (The host id needs no setting here: App Service derives it from the site name.)
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        {
          name: 'DOCKER_REGISTRY_SERVER_URL'
          value: 'https://${registryLoginServer}'
        }
        {
          name: 'WEBSITES_ENABLE_APP_SERVICE_STORAGE'
          value: 'false'
        }
        {
          name: 'WEBSITES_PORT'
          value: string(containerPort)
        }
      ])
    }
  }
}

// No publishing with basic (user/password) credentials: deployments are image pushes.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output siteName string = site.name
output siteId string = site.id
output apiUrl string = 'https://${site.properties.defaultHostName}'
