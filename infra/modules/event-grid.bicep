// An Event Grid custom topic (CloudEvents 1.0) whose events go to the TaskEventGrid function.
// Publishers (Batch tasks, job managers, tools) post Batch event bodies or {jobId, taskId}
// references with an Entra identity that holds EventGrid Data Sender on the topic; keys are off.
// The subscription checks that the function exists: deploy it after the Functions zip is published.
// Events Event Grid gives up on (after 30 attempts or 24 hours, or at once on a 400) are written to
// a dead-letter container with the topic's own identity; the app's Sweep takes them from there
// and works them again (README.md, "Nothing is dropped").

@description('Region of the topic.')
param location string

@description('Name of the custom topic.')
param topicName string

@description('Resource id of the Function App that hosts TaskEventGrid.')
param functionAppId string

@description('Tags for the topic.')
param tags object = {}

@description('Name of the storage account that holds the dead-letter container.')
param deadLetterStorageName string

@description('Name of the blob container Event Grid writes dead-lettered events to.')
param deadLetterContainerName string

// Storage Blob Data Contributor: the topic writes dead-lettered events with its identity.
var storageBlobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource deadLetterStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: deadLetterStorageName
}

resource deadLetterBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: deadLetterStorage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: deadLetterBlobService
  name: deadLetterContainerName
}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  // Publishers post from wherever they run, so the topic keeps its public endpoint.
  //checkov:skip=CKV_AZURE_193: publishers run outside any private network this template knows; they authenticate with Entra only (disableLocalAuth)
  name: topicName
  location: location
  tags: tags
  // Writes dead-lettered events to the container (the storage account takes no shared keys).
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: true
  }
}

// The topic may write into the dead-letter container, and nowhere else.
resource deadLetterRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, topic.id, storageBlobDataContributorRoleId)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'batch-triage: Event Grid writes dead-lettered events'
  }
}

resource topicSubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'batch-triage'
  // The role must exist before Event Grid first dead-letters with it.
  dependsOn: [
    deadLetterRole
  ]
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/TaskEventGrid'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    // Without a destination, Event Grid drops what it gives up on.
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

@description('The topic endpoint publishers post to.')
output endpoint string = topic.properties.endpoint

@description('Resource id of the topic (scope for EventGrid Data Sender role assignments).')
output id string = topic.id
