// batch-triage on Azure: a Function App running the custom handler (batch-triage-functions) on
// Flex Consumption (or Elastic Premium, hostingPlan), fed by the Batch account's ServiceLog
// diagnostic setting through an Event Hub, keeping logs and state in a blob container, with a
// system-assigned managed identity, least-privilege roles, and alert rules that say when the app
// itself stops working. Parameters and outputs are documented in infra/README.md.
//
// Deploy into the resource group that will hold the app:
//   az deployment group create -g RG -f infra/main.bicep -p batchAccountName=NAME alertEmailAddress=ME
// or, for several Batch accounts, batchAccounts='[{"id": "/subscriptions/…/batchAccounts/A", "location": "westeurope"}, …]'
// then publish dist/batch-triage-functions.zip (scripts/package) to the app.
//
// Every loop, condition, resource name and scope must be computable when the deployment starts
// (parameters, resource ids and names): the Bicep compiler rejects one that reads a property
// only known once a resource exists (BCP120, BCP178), and checkov does not notice.
// tests/integration/package.rs enforces this with a lint over infra/**/*.bicep.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@description('Region of the Event Hubs namespace and the preserved-logs storage: the Batch account\'s region, because a diagnostic setting only streams to a namespace in its own region. Defaults to the resource group\'s region.')
param location string = resourceGroup().location

@description('Region of the Function App, its plan, its host storage and its monitoring; it need not be the Batch account\'s. Choose one that offers the hosting plan (infra/README.md, "Hosting plan").')
param appLocation string = location

@description('FlexConsumption (default) or ElasticPremium (Linux, EP1-EP3), for regions or subscriptions where Flex Consumption does not run custom handlers. See infra/README.md, "Hosting plan".')
@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param hostingPlan string = 'FlexConsumption'

@description('Elastic Premium only: the plan\'s SKU.')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param premiumSku string = 'EP1'

@description('Elastic Premium only: the most instances the plan may scale out to.')
@minValue(1)
@maxValue(100)
param premiumMaximumInstanceCount int = 20

@description('Elastic Premium only: FUNCTIONS_WORKER_RUNTIME. "custom" is what custom handlers use; an older Microsoft note says Linux Premium may not recognise it and to set it empty if the host reports an unknown runtime.')
param premiumWorkerRuntime string = 'custom'

@description('Email address the alert rules notify (an Azure Monitor action group): the functions failing repeatedly, no Sweep completing for three intervals, the Event Hubs reader stalled.')
@minLength(3)
param alertEmailAddress string

@description('Invocation failures of one function within 15 minutes that raise the failure alert.')
@minValue(1)
param failureAlertThreshold int = 3

@description('Short lowercase name that prefixes every resource name (3-11 letters or digits).')
@minLength(3)
@maxLength(11)
param baseName string = 'batchtriage'

@description('Name of the existing Batch account to watch, when there is one (in `location`). For several, use batchAccounts instead.')
param batchAccountName string = ''

@description('Resource group of the existing Batch account (defaults to this deployment\'s resource group).')
param batchAccountResourceGroup string = resourceGroup().name

@description('The existing Batch accounts to watch, when there are several: one object each, { id: the account\'s resource id, location: its region (lower case, e.g. westeurope), endpoint: optional, defaults to https://NAME.LOCATION.batch.azure.com }. Accounts may be in other resource groups and subscriptions, and in at most 4 regions: one Event Hubs namespace and one TaskEvents trigger per region (infra/README.md, "Several accounts"). Empty: the one account batchAccountName.')
param batchAccounts array = []

@description('Grant the app Azure Batch Job Submitter on the Batch account so that policy rules can disable or terminate jobs. Without it the app can only read. The policy must also turn actions on ([actions] enabled = true, dry_run = false).')
param enableJobActions bool = false

@description('Create an Event Grid custom topic and subscribe the TaskEventGrid function to it (for tasks or tools that publish Batch event bodies or {jobId, taskId} references). The subscription validates that the function exists: set this to true only once the Functions zip has been published, and run the deployment again.')
param deployEventGridTopic bool = false

@description('Days the Log Analytics workspace behind Application Insights keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('Flex Consumption only: the most instances the app may scale out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption only: memory per instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Flex Consumption only: the runtime stack name. Custom handlers use "custom"; check what the region offers with: az functionapp list-flexconsumption-runtimes --location LOCATION --runtime custom')
param functionRuntimeName string = 'custom'

@description('Flex Consumption only: the runtime version for functionRuntimeName, exactly as the region\'s runtime list spells it (an unlisted value is accepted by ARM but the host then fails to start).')
param functionRuntimeVersion string = '1.0'

@description('Replication of the Functions host storage account (its state can be rebuilt).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param hostStorageSku string = 'Standard_LRS'

@description('Replication of the preserved-logs storage account; choose a geo-redundant SKU if the logs must outlive a regional outage.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param logStorageSku string = 'Standard_LRS'

@description('Blob container Event Grid writes the events it gave up on to (BATCH_TRIAGE_DEAD_LETTER_STORE); each Sweep works them again.')
@minLength(3)
@maxLength(63)
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Blob container that holds preserved logs and batch-triage\'s state (BATCH_TRIAGE_STORE).')
@minLength(3)
@maxLength(63)
param logContainerName string = 'batch-logs'

@description('Days a deleted or overwritten preserved-log blob stays recoverable (blob soft delete).')
@minValue(1)
@maxValue(365)
param logSoftDeleteDays int = 14

@description('Event Hubs namespace tier. Standard is the least that allows a dedicated consumer group.')
@allowed([
  'Standard'
  'Premium'
])
param eventHubSku string = 'Standard'

@description('Partitions of the ServiceLog event hub; they bound how many instances read in parallel (2-4 is plenty for Batch logs).')
@minValue(1)
@maxValue(32)
param eventHubPartitionCount int = 2

@description('Days the event hub keeps ServiceLog records that have not been read.')
@minValue(1)
@maxValue(7)
param eventHubRetentionDays int = 1

@description('Minutes between two runs of the Sweep function (BATCH_TRIAGE_SWEEP_SCHEDULE becomes 0 */N * * * *). The "no sweep" alert fires after three intervals without a completed sweep.')
@allowed([
  5
  10
  15
  20
])
param sweepIntervalMinutes int = 5

@description('Seconds one invocation may work before it stops and reports what is left (BATCH_TRIAGE_INVOCATION_SECONDS); keep it below the function timeout.')
@minValue(10)
param invocationSeconds int = 240

@description('Log files larger than this many MiB are recorded as skipped rather than copied (BATCH_TRIAGE_MAX_FILE_MIB).')
@minValue(1)
param maxFileMiB int = 4096

@description('Path of the policy file inside the deployed package (BATCH_TRIAGE_POLICY): policy.toml, and only for a zip built with scripts/package --policy FILE (a path to no packaged file stops the handler at start). Empty means the default policy: keep logs, notify nobody, act on nothing.')
param policyPath string = ''

@description('Extra notification hosts, comma-separated (BATCH_TRIAGE_ALLOW_HOSTS), e.g. hooks.example.com,*.example.net.')
param allowHosts string = ''

@description('More app settings, such as the receiver secrets the policy names with *_env keys (e.g. {"TEAMS_WEBHOOK_URL": "https://..."}). Secure: not logged in the deployment history.')
@secure()
param extraAppSettings object = {}

@description('Tags for every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------
// Names and role definitions
// ---------------------------------------------------------------------------------------------

var token = uniqueString(resourceGroup().id, baseName)
var appName = '${baseName}-${token}'
var planName = '${baseName}-plan-${token}'
var hostStorageName = take('${baseName}fn${token}', 24)
var logStorageName = take('${baseName}logs${token}', 24)
var deploymentContainerName = 'app-package'
var eventHubNamespaceName = '${baseName}-${token}'
// The accounts watched, from the parameters alone (so loops and scopes over them are known when
// the deployment starts).
var singleAccount = [
  {
    id: resourceId(batchAccountResourceGroup, 'Microsoft.Batch/batchAccounts', batchAccountName)
    location: location
  }
]
var accounts = empty(batchAccounts) ? singleAccount : batchAccounts
// A diagnostic setting only streams to a namespace in its account's region: the namespace above
// serves `location`; each other region of an account gets a namespace of its own, read by its
// own Event Hubs trigger (TaskEvents2, TaskEvents3, TaskEvents4: at most three other regions).
// (Written without lambdas, which checkov's Bicep parser cannot read: union() keeps the first
// appearance of each region, in order, so skipping `location`, first, leaves the others.)
var accountRegions = [for account in accounts: account.location]
var otherRegions = skip(union([location], accountRegions), 1)
// The namespace that receives the records of the accounts in each region.
var regionNamespaceNames = [for (region, i) in otherRegions: '${eventHubNamespaceName}-r${i + 2}']
// The numbered account settings the handler reads (README, "Several accounts"): the managed
// identity reads every account, so there is no key among them.
// The endpoint is the account's `endpoint` when given, else the regional form. Account names
// and regions are letters and digits, so the JSON built here needs no escaping.
var accountSettingEntries = [for (account, i) in accounts: '"BATCH_TRIAGE_ACCOUNTS__${i}__NAME": "${last(split(account.id, '/'))}", "BATCH_TRIAGE_ACCOUNTS__${i}__ENDPOINT": "${contains(account, 'endpoint') ? account.endpoint : 'https://${toLower(last(split(account.id, '/')))}.${account.location}.batch.azure.com'}"']
var accountAppSettings = json('{${join(accountSettingEntries, ', ')}}')
var eventHubName = 'batch-servicelog'
var consumerGroupName = 'batch-triage'
var topicName = '${baseName}-${token}'
var workspaceName = '${baseName}-${token}'
var appInsightsName = '${baseName}-${token}'
var isFlex = hostingPlan == 'FlexConsumption'
// NCRONTAB with seconds, in UTC; the allowed intervals divide an hour, so runs are evenly spaced.
var sweepSchedule = '0 */${sweepIntervalMinutes} * * * *'

// Built-in role definitions (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageTableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var storageBlobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var eventHubsDataReceiverRoleId = 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

// ---------------------------------------------------------------------------------------------
// Host storage: AzureWebJobsStorage (timers, keys, Event Hubs checkpoints) and the deployment
// package container. Identity only: shared keys are disabled.
// ---------------------------------------------------------------------------------------------

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // The app reaches its storage over the public endpoint with its managed identity: closing the
  // network needs VNet integration and private endpoints, which this template does not set up.
  //checkov:skip=CKV_AZURE_35: public endpoint needed by the app (no VNet integration); access is by Entra identity only, shared keys disabled
  //checkov:skip=CKV_AZURE_59: same: no VNet integration, so the account keeps its public endpoint (identity-only access)
  //checkov:skip=CKV_AZURE_206: replication is the hostStorageSku parameter; LRS by default, the host's state can be rebuilt
  //checkov:skip=CKV_AZURE_43: the name is take(baseName + 'fn' + uniqueString(...), 24): 3-24 lowercase letters and digits, which checkov cannot evaluate
  name: hostStorageName
  location: appLocation
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: hostStorageSku
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource hostBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// ---------------------------------------------------------------------------------------------
// Log storage: preserved task logs and batch-triage's state (cursor, groups, outbox, audit) in one
// container, the only thing the app may write there.
// ---------------------------------------------------------------------------------------------

resource logStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35: public endpoint needed by the app (no VNet integration) and by people opening preserved logs; access is by Entra identity only, shared keys disabled
  //checkov:skip=CKV_AZURE_59: same: no VNet integration, so the account keeps its public endpoint (identity-only access)
  //checkov:skip=CKV_AZURE_206: replication is the logStorageSku parameter (LRS by default; GRS/GZRS are allowed values)
  //checkov:skip=CKV_AZURE_43: the name is take(baseName + 'logs' + uniqueString(...), 24): 3-24 lowercase letters and digits, which checkov cannot evaluate
  name: logStorageName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: logStorageSku
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource logBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: logStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: logSoftDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: logSoftDeleteDays
    }
  }
}

resource logContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: logBlobService
  name: logContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Event Grid's dead letters (events it gave up on), which every Sweep takes into the parking
// area of the store and works again. Created with or without the topic, so the setting below
// never points at nothing; empty, it costs one list per Sweep.
resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: logBlobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

// ---------------------------------------------------------------------------------------------
// Event Hubs: the Batch account's ServiceLog diagnostic setting sends here; TaskEvents reads.
// ---------------------------------------------------------------------------------------------

resource eventHubNamespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  // Local (SAS) auth stays on: an Azure Monitor diagnostic setting sends with a namespace
  // authorization rule. The app itself connects with its managed identity.
  name: eventHubNamespaceName
  location: location
  tags: tags
  sku: {
    name: eventHubSku
    tier: eventHubSku
    capacity: 1
  }
  properties: {
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: false
  }
}

resource eventHub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: eventHubNamespace
  name: eventHubName
  properties: {
    partitionCount: eventHubPartitionCount
    messageRetentionInDays: eventHubRetentionDays
  }
}

resource consumerGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: eventHub
  name: consumerGroupName
  properties: {
    userMetadata: 'batch-triage TaskEvents function'
  }
}

// Azure Monitor streams with a namespace-level rule holding Manage, Send and Listen
// (https://learn.microsoft.com/azure/azure-monitor/essentials/diagnostic-settings).
resource diagnosticsSendRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = {
  parent: eventHubNamespace
  name: 'batch-diagnostics'
  properties: {
    rights: [
      'Manage'
      'Send'
      'Listen'
    ]
  }
}

// The other regions' namespaces, hubs, consumer groups and send rules: the same shape as above.
resource regionNamespaces 'Microsoft.EventHub/namespaces@2024-01-01' = [for (region, i) in otherRegions: {
  name: '${eventHubNamespaceName}-r${i + 2}'
  location: region
  tags: tags
  sku: {
    name: eventHubSku
    tier: eventHubSku
    capacity: 1
  }
  properties: {
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: false
  }
}]

resource regionHubs 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = [for (region, i) in otherRegions: {
  parent: regionNamespaces[i]
  name: eventHubName
  properties: {
    partitionCount: eventHubPartitionCount
    messageRetentionInDays: eventHubRetentionDays
  }
}]

resource regionConsumerGroups 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = [for (region, i) in otherRegions: {
  parent: regionHubs[i]
  name: consumerGroupName
  properties: {
    userMetadata: 'batch-triage TaskEvents${i + 2} function'
  }
}]

resource regionSendRules 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = [for (region, i) in otherRegions: {
  parent: regionNamespaces[i]
  name: 'batch-diagnostics'
  properties: {
    rights: [
      'Manage'
      'Send'
      'Listen'
    ]
  }
}]

// ---------------------------------------------------------------------------------------------
// Monitoring: Application Insights on a Log Analytics workspace (Entra auth only), and the alert
// rules that watch the app itself.
// ---------------------------------------------------------------------------------------------

module monitoring 'modules/monitoring.bicep' = {
  name: 'batch-triage-monitoring'
  params: {
    location: appLocation
    workspaceName: workspaceName
    appInsightsName: appInsightsName
    retentionDays: logRetentionDays
    tags: tags
  }
}

// The component, for the app's role assignment on it.
resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

module alerts 'modules/alerts.bicep' = {
  name: 'batch-triage-alerts'
  params: {
    location: appLocation
    namePrefix: '${baseName}-${token}'
    appInsightsId: monitoring.outputs.id
    eventHubNamespaceId: eventHubNamespace.id
    eventHubName: eventHub.name
    sweepIntervalMinutes: sweepIntervalMinutes
    failureAlertThreshold: failureAlertThreshold
    alertEmailAddress: alertEmailAddress
    tags: tags
  }
}

// ---------------------------------------------------------------------------------------------
// The Function App: Linux, custom handler, on Flex Consumption or Elastic Premium.
// ---------------------------------------------------------------------------------------------

var flexPlanSku = {
  tier: 'FlexConsumption'
  name: 'FC1'
}
var premiumPlanSku = {
  tier: 'ElasticPremium'
  name: premiumSku
}
var flexPlanProperties = {
  reserved: true
}
var premiumPlanProperties = {
  reserved: true
  maximumElasticWorkerCount: premiumMaximumInstanceCount
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225: zone redundancy is not offered for Flex Consumption in every region; left off (a redeploy restores the app)
  name: planName
  location: appLocation
  tags: tags
  kind: isFlex ? 'functionapp' : 'elastic'
  sku: isFlex ? flexPlanSku : premiumPlanSku
  properties: isFlex ? flexPlanProperties : premiumPlanProperties
}

var baseAppSettings = {
  // Host storage, identity-based (system-assigned identity: the account name is enough).
  AzureWebJobsStorage__accountName: hostStorage.name
  // The Batch accounts are the numbered settings of accountAppSettings, read with the managed
  // identity (no key).
  // A bare container URL: the handler uses the managed identity.
  BATCH_TRIAGE_STORE: '${logStorage.properties.primaryEndpoints.blob}${logContainerName}'
  // Event Grid's dead letters, drained into the store's parking area by every Sweep.
  BATCH_TRIAGE_DEAD_LETTER_STORE: '${logStorage.properties.primaryEndpoints.blob}${deadLetterContainerName}'
  BATCH_TRIAGE_INVOCATION_SECONDS: string(invocationSeconds)
  BATCH_TRIAGE_MAX_FILE_MIB: string(maxFileMiB)
  BATCH_TRIAGE_SWEEP_SCHEDULE: sweepSchedule
  // TaskEvents: the event hub, and its namespace as an identity-based connection named
  // BatchLogsEventHub (the "connection" of TaskEvents/function.json).
  BATCH_TRIAGE_EVENT_HUB: eventHub.name
  BATCH_TRIAGE_CONSUMER_GROUP: consumerGroup.name
  BatchLogsEventHub__fullyQualifiedNamespace: '${eventHubNamespace.name}.servicebus.windows.net'
  BatchLogsEventHub__credential: 'managedidentity'
  // TaskEvents2-4: the namespaces of the other regions; a slot with no region reads the first
  // namespace and is disabled.
  BatchLogsEventHub2__fullyQualifiedNamespace: '${length(otherRegions) >= 1 ? regionNamespaceNames[0] : eventHubNamespaceName}.servicebus.windows.net'
  BatchLogsEventHub2__credential: 'managedidentity'
  'AzureWebJobs.TaskEvents2.Disabled': length(otherRegions) >= 1 ? 'false' : 'true'
  BatchLogsEventHub3__fullyQualifiedNamespace: '${length(otherRegions) >= 2 ? regionNamespaceNames[1] : eventHubNamespaceName}.servicebus.windows.net'
  BatchLogsEventHub3__credential: 'managedidentity'
  'AzureWebJobs.TaskEvents3.Disabled': length(otherRegions) >= 2 ? 'false' : 'true'
  BatchLogsEventHub4__fullyQualifiedNamespace: '${length(otherRegions) >= 3 ? regionNamespaceNames[2] : eventHubNamespaceName}.servicebus.windows.net'
  BatchLogsEventHub4__credential: 'managedidentity'
  'AzureWebJobs.TaskEvents4.Disabled': length(otherRegions) >= 3 ? 'false' : 'true'
  // Telemetry with the managed identity (the component has local auth off).
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
}
// Flex Consumption takes the runtime from functionAppConfig and rejects these two settings;
// Elastic Premium needs them, and runs the zip as published (no Azure Files content share, which
// would need a storage key: the accounts allow identity access only).
var premiumAppSettings = {
  FUNCTIONS_EXTENSION_VERSION: '~4'
  FUNCTIONS_WORKER_RUNTIME: premiumWorkerRuntime
  WEBSITE_RUN_FROM_PACKAGE: '1'
}
var hostingAppSettings = isFlex ? {} : premiumAppSettings
var policySettings = empty(policyPath) ? {} : { BATCH_TRIAGE_POLICY: policyPath }
var allowHostSettings = empty(allowHosts) ? {} : { BATCH_TRIAGE_ALLOW_HOSTS: allowHosts }

// The deployment package and the runtime, Flex Consumption only.
var flexAppConfig = {
  deployment: {
    storage: {
      type: 'blobContainer'
      value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
      authentication: {
        type: 'SystemAssignedIdentity'
      }
    }
  }
  scaleAndConcurrency: {
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  runtime: {
    name: functionRuntimeName
    version: functionRuntimeVersion
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // The functions are reached over the internet: Event Grid delivers to the TaskEventGrid webhook
  // and people call Diagnose with a function key. Requests are authorised by function keys (the
  // Event Grid extension's system key, Diagnose's function key), not App Service Authentication.
  //checkov:skip=CKV_AZURE_222: public network access is needed for Event Grid delivery and for Diagnose (no VNet integration)
  //checkov:skip=CKV_AZURE_17: client certificates are not used: callers present function keys
  //checkov:skip=CKV_AZURE_212: Flex Consumption and Elastic Premium add instances on demand; there is no fixed instance count to fail over
  //checkov:skip=CKV_AZURE_213: a custom handler has no health-check route; the Functions host supervises the handler process
  name: appName
  location: appLocation
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    clientCertEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
    }
    functionAppConfig: isFlex ? flexAppConfig : null
  }
  dependsOn: [
    deploymentContainer
  ]
}

// The app settings as one object (a child resource, as Microsoft's Flex Consumption samples do).
// A `[for ... in items(...)]` over them would not compile: several values are only known once the
// deployment runs (BCP178). The template's settings win over extraAppSettings on a name clash.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov reads every sites/config as the site's `web` configuration; this one is the
  // `appsettings` dictionary, which has none of the properties these checks look for.
  //checkov:skip=CKV_AZURE_13: not the web config: the app settings dictionary (callers present function keys)
  //checkov:skip=CKV_AZURE_63: not the web config: the app settings dictionary (invocations are logged to Application Insights)
  //checkov:skip=CKV_AZURE_65: not the web config: the app settings dictionary
  //checkov:skip=CKV_AZURE_66: not the web config: the app settings dictionary
  //checkov:skip=CKV_AZURE_80: not the web config, and no .NET Framework: the handler is a native binary
  //checkov:skip=CKV_AZURE_88: not the web config; the app reads its package from blob storage, not Azure Files
  //checkov:skip=CKV_AZURE_222: not the web config; public access is decided on the site (see functionApp)
  parent: functionApp
  name: 'appsettings'
  properties: union(extraAppSettings, baseAppSettings, accountAppSettings, hostingAppSettings, policySettings, allowHostSettings)
}

// No publishing with basic (user/password) credentials: deploy with an Entra identity.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

// ---------------------------------------------------------------------------------------------
// Roles of the app's identity, each on the narrowest scope.
// ---------------------------------------------------------------------------------------------

// The host's own storage with an identity-based AzureWebJobsStorage: blobs (keys, timer locks,
// Event Hubs checkpoints, the deployment package) need Blob Data Owner, and the host's
// diagnostic events need tables. Nothing here uses storage queues (no blob trigger, no Durable
// Functions), so Queue Data Contributor is not granted.
resource hostStorageBlobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, functionApp.id, storageBlobDataOwnerRoleId)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'batch-triage: Functions host storage and deployment package'
  }
}

resource hostStorageTableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, functionApp.id, storageTableDataContributorRoleId)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributorRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'batch-triage: Functions host diagnostic events'
  }
}

// Preserved logs and state: read and write blobs of the one container.
resource logContainerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(logContainer.id, functionApp.id, storageBlobDataContributorRoleId)
  scope: logContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'batch-triage: preserved logs and state'
  }
}

// Event Grid's dead letters: read, and deleted once parked in the store (a blob left behind
// would be taken in again on every Sweep). Nothing else in that container.
resource deadLetterContainerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, functionApp.id, storageBlobDataContributorRoleId)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'batch-triage: take in Event Grid dead letters'
  }
}

// TaskEvents reads the ServiceLog hub.
resource eventHubRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventHub.id, functionApp.id, eventHubsDataReceiverRoleId)
  scope: eventHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiverRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'batch-triage: read Batch ServiceLog records'
  }
}

// Application Insights with local auth disabled accepts telemetry from this role only.
resource appInsightsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionApp.id, monitoringMetricsPublisherRoleId)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'batch-triage: send telemetry'
  }
  dependsOn: [
    monitoring
  ]
}

// The other regions' TaskEvents triggers read their hubs.
resource regionHubRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (region, i) in otherRegions: {
  name: guid(regionHubs[i].id, functionApp.id, eventHubsDataReceiverRoleId)
  scope: regionHubs[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiverRoleId)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'batch-triage: read Batch ServiceLog records'
  }
}]

// Each Batch account: its diagnostic setting, to the namespace of its region, and the app's
// roles on it, in its own subscription and resource group.
module batch 'modules/batch-account.bicep' = [for (account, i) in accounts: {
  name: 'batch-triage-batch-account-${i}'
  scope: resourceGroup(split(account.id, '/')[2], split(account.id, '/')[4])
  params: {
    batchAccountName: last(split(account.id, '/'))
    principalId: functionApp.identity.principalId
    functionAppId: functionApp.id
    enableJobActions: enableJobActions
    eventHubAuthorizationRuleId: account.location == location ? diagnosticsSendRule.id : resourceId('Microsoft.EventHub/namespaces/authorizationRules', '${eventHubNamespaceName}-r${indexOf(otherRegions, account.location) + 2}', 'batch-diagnostics')
    eventHubName: eventHubName
  }
  dependsOn: [
    regionSendRules
  ]
}]

// ---------------------------------------------------------------------------------------------
// Event Grid (optional): a custom topic whose events go to the TaskEventGrid function.
// ---------------------------------------------------------------------------------------------

module eventGrid 'modules/event-grid.bicep' = if (deployEventGridTopic) {
  name: 'batch-triage-event-grid'
  params: {
    location: location
    topicName: topicName
    functionAppId: functionApp.id
    tags: tags
    deadLetterStorageName: logStorage.name
    deadLetterContainerName: deadLetterContainer.name
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

@description('Name of the Function App: publish dist/batch-triage-functions.zip to it.')
output functionAppName string = functionApp.name

@description('Host name of the Function App (https://HOST/api/Diagnose).')
output functionAppHostName string = functionApp.properties.defaultHostName

@description('The hosting plan deployed: FlexConsumption or ElasticPremium (it decides how the zip is published).')
output hostingPlan string = hostingPlan

@description('Object id of the app\'s system-assigned managed identity (for extra role assignments).')
output principalId string = functionApp.identity.principalId

@description('The store: the blob container URL of preserved logs and state (BATCH_TRIAGE_STORE).')
output storeUrl string = '${logStorage.properties.primaryEndpoints.blob}${logContainerName}'

@description('Name of the storage account that holds the preserved logs.')
output logStorageAccountName string = logStorage.name

@description('Event Hubs namespace and hub that receive the Batch ServiceLog records.')
output eventHubNamespaceName string = eventHubNamespace.name

@description('Name of the event hub fed by the diagnostic setting.')
output eventHubName string = eventHub.name

@description('The Event Hubs namespaces, one per region of the accounts: the first is `location`\'s (TaskEvents), then TaskEvents2, TaskEvents3, TaskEvents4\'s.')
output eventHubNamespaceNames array = concat([eventHubNamespace.name], regionNamespaceNames)

@description('Endpoint of the Event Grid custom topic, or empty when deployEventGridTopic is false.')
output eventGridTopicEndpoint string = deployEventGridTopic ? eventGrid.outputs.endpoint : ''

@description('Name of the Application Insights component (the alert rules query it).')
output appInsightsName string = monitoring.outputs.name

@description('Names of the alert rules on the app (failures, no sweep, Event Hubs reader stalled).')
output alertRuleNames array = alerts.outputs.ruleNames
