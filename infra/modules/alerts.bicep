// Alert rules on batch-triage itself: a triage system that stops working silently is worse than
// none. Each rule reads a signal the platform records anyway (Application Insights requests for
// every function invocation, Event Hubs metrics), not a heartbeat of our own, and notifies one
// email address through an action group. The KQL is explained in README.md, "Monitoring".

@description('Region of the log alert rules (the Application Insights component\'s).')
param location string

@description('Prefix of the rule and action group names.')
param namePrefix string

@description('Resource id of the Application Insights component the Function App reports to.')
param appInsightsId string

@description('Resource id of the Event Hubs namespace that receives the Batch ServiceLog records.')
param eventHubNamespaceId string

@description('Name of the event hub the TaskEvents function reads.')
param eventHubName string

@description('Minutes between two Sweep runs: 5, 10, 15 or 20.')
@allowed([
  5
  10
  15
  20
])
param sweepIntervalMinutes int

@description('Failed invocations of one function within 15 minutes that raise the failure alert.')
@minValue(1)
param failureAlertThreshold int

@description('Email address the alerts go to.')
param alertEmailAddress string

@description('Tags for every resource.')
param tags object = {}

// Three sweep intervals, in the window sizes log alerts accept.
var sweepWindows = {
  '5': 'PT15M'
  '10': 'PT30M'
  '15': 'PT45M'
  '20': 'PT1H'
}
var sweepWindow = sweepWindows[string(sweepIntervalMinutes)]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-alerts'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'batchtriage'
    enabled: true
    emailReceivers: [
      {
        name: 'batch-triage-owner'
        emailAddress: alertEmailAddress
        useCommonAlertSchema: true
      }
    ]
  }
}

// Any function (TaskEvents, TaskEventGrid, Sweep, Diagnose) whose invocations keep failing: the
// handler answered 500 (a transient failure it asked the host to retry), crashed, or did not
// start. One alert per function name.
resource functionsFailing 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: '${namePrefix}-functions-failing'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'batch-triage: a function keeps failing'
    description: 'At least ${failureAlertThreshold} failed invocations of one function in 15 minutes. Look at the function\'s traces (README.md, Monitoring).'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'requests | where success == false | project timestamp, FunctionName = operation_Name'
          timeAggregation: 'Count'
          dimensions: [
            {
              name: 'FunctionName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThanOrEqual'
          threshold: failureAlertThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// The safety net itself: no Sweep invocation succeeded for three intervals (the app is stopped,
// the host cannot start the handler, the timer lost its lock, or every run fails). No rows count
// as zero, so silence fires it too.
resource sweepMissing 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: '${namePrefix}-sweep-missing'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'batch-triage: no sweep completed'
    description: 'No successful Sweep invocation in three schedule intervals (${sweepWindow}).'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: sweepWindow
    criteria: {
      allOf: [
        {
          query: 'requests | where operation_Name == "Sweep" and success == true | project timestamp'
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// The Event Hubs reader has stalled: records keep arriving at the hub while nothing reads them
// for 30 minutes. A metric alert cannot compare two metrics, so a reader that is merely slow shows
// in the failure alert or in the KQL of README.md, "Monitoring", not here.
resource readerStalled 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-event-hub-reader-stalled'
  location: 'global'
  tags: tags
  properties: {
    description: 'ServiceLog records arrive at ${eventHubName} but none were read in 30 minutes: TaskEvents is not consuming.'
    severity: 2
    enabled: true
    scopes: [
      eventHubNamespaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT30M'
    targetResourceType: 'Microsoft.EventHub/namespaces'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'RecordsArrive'
          metricNamespace: 'Microsoft.EventHub/namespaces'
          metricName: 'IncomingMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                eventHubName
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'NothingRead'
          metricNamespace: 'Microsoft.EventHub/namespaces'
          metricName: 'OutgoingMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                eventHubName
              ]
            }
          ]
          operator: 'LessThan'
          threshold: 1
          timeAggregation: 'Total'
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

@description('Names of the alert rules.')
output ruleNames array = [
  functionsFailing.name
  sweepMissing.name
  readerStalled.name
]
