// What batch-triage needs on the existing Batch account, deployed into the Batch account's resource
// group (which may differ from the Function App's):
// - the ServiceLog diagnostic setting that streams task events into the Event Hub;
// - the Function App identity's data-plane roles: Azure Batch Account Reader always, plus Azure
//   Batch Job Submitter only when job actions are enabled.

@description('Name of the existing Batch account.')
param batchAccountName string

@description('Object (principal) id of the Function App\'s system-assigned managed identity.')
param principalId string

@description('Resource id of the Function App; makes the role assignment names unique per app.')
param functionAppId string

@description('Grant Azure Batch Job Submitter (terminate/disable/enable jobs). Off by default.')
param enableJobActions bool = false

@description('Resource id of the Event Hubs namespace authorization rule the diagnostic setting sends with.')
param eventHubAuthorizationRuleId string

@description('Name of the event hub that receives the ServiceLog records.')
param eventHubName string

@description('Name of the diagnostic setting created on the Batch account.')
param diagnosticSettingName string = 'batch-triage-servicelog'

// Built-in role definitions (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/compute).
var batchAccountReaderRoleId = '11076f67-66f6-4be0-8f6b-f0609fd05cc9' // Azure Batch Account Reader
var batchJobSubmitterRoleId = '48e5e92e-a480-4e71-aa9c-2778f4c13781' // Azure Batch Job Submitter

resource batchAccount 'Microsoft.Batch/batchAccounts@2024-07-01' existing = {
  name: batchAccountName
}

resource serviceLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: diagnosticSettingName
  scope: batchAccount
  properties: {
    eventHubAuthorizationRuleId: eventHubAuthorizationRuleId
    eventHubName: eventHubName
    logs: [
      {
        category: 'ServiceLog'
        enabled: true
      }
    ]
  }
}

resource readerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(batchAccount.id, functionAppId, batchAccountReaderRoleId)
  scope: batchAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', batchAccountReaderRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'batch-triage: read jobs, tasks and task files'
  }
}

resource jobSubmitterRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enableJobActions) {
  name: guid(batchAccount.id, functionAppId, batchJobSubmitterRoleId)
  scope: batchAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', batchJobSubmitterRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'batch-triage: disable or terminate jobs when a policy rule says so'
  }
}
