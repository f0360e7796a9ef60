// The image the container app runs now, for re-provisioning without an image (azd's
// "resource exists" pattern): `azd provision` passes SERVICE_APP_RESOURCE_EXISTS, which azd
// sets before provisioning by looking for the resource tagged azd-service-name=app. Without
// this, a re-provision would either reset the app to a placeholder image or leave its settings
// stale.

@description('Whether the container app already exists.')
param exists bool

@description('Name of the container app.')
param name string

resource existingApp 'Microsoft.App/containerApps@2025-07-01' existing = if (exists) {
  name: name
}

@description('The first container\'s image, or empty when the app does not exist yet.')
output image string = exists ? existingApp.properties.template.containers[0].image : ''
