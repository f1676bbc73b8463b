// Application Insights on a Log Analytics workspace, with local (instrumentation key) auth off:
// the Function App sends telemetry with its managed identity (Monitoring Metrics Publisher).

@description('Region of the resources.')
param location string

@description('Name of the Log Analytics workspace.')
param workspaceName string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Days the workspace keeps logs.')
@minValue(30)
@maxValue(730)
param retentionDays int = 30

@description('Tags for every resource.')
param tags object = {}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionDays
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
    DisableLocalAuth: true
  }
}

@description('Connection string of the component (APPLICATIONINSIGHTS_CONNECTION_STRING); not a secret once local auth is off.')
output connectionString string = appInsights.properties.ConnectionString

@description('Name of the Application Insights component.')
output name string = appInsights.name

@description('Resource id of the Application Insights component (the scope of the log alert rules).')
output id string = appInsights.id
