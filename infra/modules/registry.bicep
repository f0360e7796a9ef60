// Container registry for the service image. Built by `az acr build` (ACR Tasks, so no
// local Docker is needed); pulled by the app's managed identity (AcrPull). No admin user,
// no anonymous pull: there is no registry password anywhere.

param location string

@description('Globally unique registry name (5-50 letters and digits).')
@minLength(5)
@maxLength(50)
param name string

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param sku string = 'Standard'

param tags object = {}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  //checkov:skip=CKV_AZURE_139:The registry must be reachable by ACR Tasks (az acr build) and by Container Apps Consumption / Functions Premium without a VNet; pulls are authenticated with a managed identity (AcrPull), admin user and anonymous pull are off.
  //checkov:skip=CKV_AZURE_163:Vulnerability scanning is Microsoft Defender for Containers, a subscription-level plan, not a registry property; enable it per subscription (see infra/README.md).
  //checkov:skip=CKV_AZURE_166:Quarantine (Premium tier) needs a scanner that releases images; the only images here are our own az acr build of this repository.
  //checkov:skip=CKV_AZURE_233:Zone redundancy is a Premium-tier feature; the registry is only read when a replica starts, and the image can be rebuilt from source in minutes.
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
    zoneRedundancy: 'Disabled'
  }
}

output id string = registry.id
output name string = registry.name
output loginServer string = registry.properties.loginServer
