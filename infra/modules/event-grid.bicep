// An Event Grid custom topic (CloudEvents 1.0) whose events go to the TaskEventGrid function.
// Publishers (Batch tasks, job managers, tools) post Batch event bodies or {jobId, taskId}
// references with an Entra identity that holds EventGrid Data Sender on the topic; keys are off.
// The subscription checks that the function exists: deploy it after the Functions zip is published.

@description('Region of the topic.')
param location string

@description('Name of the custom topic.')
param topicName string

@description('Resource id of the Function App that hosts TaskEventGrid.')
param functionAppId string

@description('Tags for the topic.')
param tags object = {}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  // Publishers post from wherever they run, so the topic keeps its public endpoint.
  //checkov:skip=CKV_AZURE_193: publishers run outside any private network this template knows; they authenticate with Entra only (disableLocalAuth)
  //checkov:skip=CKV_AZURE_191: the topic delivers to an Azure Function endpoint, which needs no topic identity; an unused identity would be one more principal
  name: topicName
  location: location
  tags: tags
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: true
  }
}

resource topicSubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'batch-triage'
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
  }
}

@description('The topic endpoint publishers post to.')
output endpoint string = topic.properties.endpoint

@description('Resource id of the topic (scope for EventGrid Data Sender role assignments).')
output id string = topic.id
