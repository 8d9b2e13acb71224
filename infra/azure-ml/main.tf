# derm-cloud serving adapter on an Azure Machine Learning managed online endpoint.
#
# Creates: a workspace encrypted with a customer-managed key (Key Vault, HSM-backed, purge protection), private
# storage and registry, monitoring, the online endpoint, and - once the assets are registered - the deployment,
# its traffic and its autoscale rules.
#
# Artefacts come from `derm-cloud deploy package --cloud azureml MODEL_DIR --out pkg`. Terraform cannot upload
# files into the workspace's datastore, so register them with the Azure ML CLI and pass the ids back:
#   az ml model create --name derm-cloud --path pkg/model --type custom_model ...        -> var.model_asset_id
#   az ml code create / az ml environment create --conda-file pkg/environment/conda.yaml  -> var.code_asset_id,
#                                                                                            var.environment_asset_id
# (or run `az ml online-deployment create -f pkg/deployment.yml`, which registers all three, and skip the
# deployment here by leaving the ids null).

data "azurerm_client_config" "current" {}

locals {
  suffix = substr(sha1("${data.azurerm_client_config.current.subscription_id}/${var.name}"), 0, 6)
  tags   = merge(var.tags, { "derm-cloud-component" = "azureml-adapter" })
  deploy = var.model_asset_id != null && var.code_asset_id != null && var.environment_asset_id != null
}

resource "azurerm_resource_group" "derm" {
  name     = "${var.name}-rg"
  location = var.location
  tags     = local.tags
}

resource "azurerm_user_assigned_identity" "workspace" {
  name                = "${var.name}-workspace-id"
  location            = azurerm_resource_group.derm.location
  resource_group_name = azurerm_resource_group.derm.name
  tags                = local.tags
}

# --- customer-managed key ---------------------------------------------------------------------------------------

resource "azurerm_key_vault" "derm" {
  #checkov:skip=CKV2_AZURE_32:private endpoints need the caller's virtual network, which this module does not own; public network access is disabled and only trusted Azure services pass the firewall
  name                          = "${var.name}-kv-${local.suffix}"
  location                      = azurerm_resource_group.derm.location
  resource_group_name           = azurerm_resource_group.derm.name
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "premium" # HSM-backed keys
  rbac_authorization_enabled    = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = false

  network_acls {
    default_action = "Deny"
    bypass         = "AzureServices"
  }

  tags = local.tags
}

# Whoever runs terraform creates the key; the workspace identity may only wrap and unwrap with it.
resource "azurerm_role_assignment" "deployer_crypto_officer" {
  scope                = azurerm_key_vault.derm.id
  role_definition_name = "Key Vault Crypto Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_role_assignment" "workspace_key_user" {
  scope                = azurerm_key_vault.derm.id
  role_definition_name = "Key Vault Crypto Service Encryption User"
  principal_id         = azurerm_user_assigned_identity.workspace.principal_id
}

resource "azurerm_key_vault_key" "cmk" {
  name            = "${var.name}-cmk"
  key_vault_id    = azurerm_key_vault.derm.id
  key_type        = "RSA-HSM"
  key_size        = 3072
  key_opts        = ["wrapKey", "unwrapKey"]
  expiration_date = var.key_expiration_date

  rotation_policy {
    automatic {
      time_before_expiry = "P30D"
    }
    expire_after         = "P2Y"
    notify_before_expiry = "P29D"
  }

  depends_on = [azurerm_role_assignment.deployer_crypto_officer]
}

# --- storage: no public access, CMK, versioned ------------------------------------------------------------------

resource "azurerm_storage_account" "derm" {
  #checkov:skip=CKV2_AZURE_40:the workspace's default datastores authenticate with the account key unless identity-based datastore access is configured in the workspace; users go through Entra ID (storage_use_azuread)
  #checkov:skip=CKV2_AZURE_33:private endpoints need the caller's virtual network, which this module does not own; public network access is disabled, so the account is reachable only through trusted Azure services until one is added
  #checkov:skip=CKV_AZURE_33:no queues are used by the workspace or the adapter
  #checkov:skip=CKV2_AZURE_1:covered by the customer_managed_key block (the graph check does not follow it)
  #checkov:skip=CKV_AZURE_43:the name is var.name (validated: lower-case letters and digits) + "st" + a 6-hex-digit suffix; checkov cannot evaluate sha1() of a data source
  name                              = "${var.name}st${local.suffix}"
  location                          = azurerm_resource_group.derm.location
  resource_group_name               = azurerm_resource_group.derm.name
  account_tier                      = "Standard"
  account_replication_type          = "GRS"
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  public_network_access_enabled     = false
  allow_nested_items_to_be_public   = false
  infrastructure_encryption_enabled = true
  shared_access_key_enabled         = true # see the CKV2_AZURE_40 note; SAS tokens expire within a day (sas_policy)

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.workspace.id]
  }

  customer_managed_key {
    key_vault_key_id          = azurerm_key_vault_key.cmk.versionless_id
    user_assigned_identity_id = azurerm_user_assigned_identity.workspace.id
  }

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices"]
  }

  blob_properties {
    versioning_enabled = true

    delete_retention_policy {
      days = 30
    }

    container_delete_retention_policy {
      days = 30
    }
  }

  sas_policy {
    expiration_period = "01.00:00:00"
  }

  tags       = local.tags
  depends_on = [azurerm_role_assignment.workspace_key_user]
}

# --- container registry for the environment image ----------------------------------------------------------------

resource "azurerm_container_registry" "derm" {
  #checkov:skip=CKV_AZURE_165:geo-replication is a disaster-recovery choice; the image is rebuilt from the package
  #checkov:skip=CKV_AZURE_164:content trust (signed images) is being retired by Azure in favour of Notation; sign images in the build pipeline
  #checkov:skip=CKV_AZURE_166:quarantine needs an external scanner to release images; use Defender for Containers scanning
  #checkov:skip=CKV_AZURE_233:zone redundancy is region dependent; enable it where the region supports it
  #checkov:skip=CKV_AZURE_237:a dedicated data endpoint matters for firewall rules, which this module does not own
  name                          = "${var.name}acr${local.suffix}"
  location                      = azurerm_resource_group.derm.location
  resource_group_name           = azurerm_resource_group.derm.name
  sku                           = "Premium" # customer-managed keys and private access need Premium
  admin_enabled                 = false
  public_network_access_enabled = false
  anonymous_pull_enabled        = false
  retention_policy_in_days      = 30

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.workspace.id]
  }

  encryption {
    key_vault_key_id   = azurerm_key_vault_key.cmk.id
    identity_client_id = azurerm_user_assigned_identity.workspace.client_id
  }

  tags = local.tags
}

# --- monitoring -----------------------------------------------------------------------------------------------

resource "azurerm_log_analytics_workspace" "derm" {
  name                = "${var.name}-logs"
  location            = azurerm_resource_group.derm.location
  resource_group_name = azurerm_resource_group.derm.name
  sku                 = "PerGB2018"
  retention_in_days   = 90
  tags                = local.tags
}

resource "azurerm_application_insights" "derm" {
  name                = "${var.name}-appi"
  location            = azurerm_resource_group.derm.location
  resource_group_name = azurerm_resource_group.derm.name
  workspace_id        = azurerm_log_analytics_workspace.derm.id
  application_type    = "other"
  tags                = local.tags
}

# --- the workspace identity: data-plane roles on the workspace's own resources only --------------------------------

resource "azurerm_role_assignment" "workspace_blob" {
  scope                = azurerm_storage_account.derm.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.workspace.principal_id
}

resource "azurerm_role_assignment" "workspace_files" {
  scope                = azurerm_storage_account.derm.id
  role_definition_name = "Storage File Data Privileged Contributor"
  principal_id         = azurerm_user_assigned_identity.workspace.principal_id
}

resource "azurerm_role_assignment" "workspace_secrets" {
  scope                = azurerm_key_vault.derm.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = azurerm_user_assigned_identity.workspace.principal_id
}

resource "azurerm_role_assignment" "workspace_registry" {
  scope                = azurerm_container_registry.derm.id
  role_definition_name = "AcrPush"
  principal_id         = azurerm_user_assigned_identity.workspace.principal_id
}

resource "azurerm_role_assignment" "workspace_insights" {
  scope                = azurerm_application_insights.derm.id
  role_definition_name = "Monitoring Contributor"
  principal_id         = azurerm_user_assigned_identity.workspace.principal_id
}

# --- the workspace: CMK, high business impact, no public network access by default -------------------------------

resource "azurerm_machine_learning_workspace" "derm" {
  name                           = "${var.name}-ws"
  location                       = azurerm_resource_group.derm.location
  resource_group_name            = azurerm_resource_group.derm.name
  application_insights_id        = azurerm_application_insights.derm.id
  key_vault_id                   = azurerm_key_vault.derm.id
  storage_account_id             = azurerm_storage_account.derm.id
  container_registry_id          = azurerm_container_registry.derm.id
  public_network_access_enabled  = var.workspace_public_network_access
  high_business_impact           = true # less diagnostic data collected by Microsoft; extra encryption of local disks
  primary_user_assigned_identity = azurerm_user_assigned_identity.workspace.id

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.workspace.id]
  }

  encryption {
    key_vault_id              = azurerm_key_vault.derm.id
    key_id                    = azurerm_key_vault_key.cmk.id
    user_assigned_identity_id = azurerm_user_assigned_identity.workspace.id
  }

  tags = local.tags
  depends_on = [
    azurerm_role_assignment.workspace_blob,
    azurerm_role_assignment.workspace_files,
    azurerm_role_assignment.workspace_secrets,
    azurerm_role_assignment.workspace_registry,
    azurerm_role_assignment.workspace_insights,
  ]
}

# --- the managed online endpoint and deployment (ARM API through azapi) ----------------------------------------------

resource "azapi_resource" "endpoint" {
  type      = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints@2024-10-01"
  name      = var.endpoint_name
  parent_id = azurerm_machine_learning_workspace.derm.id
  location  = azurerm_resource_group.derm.location

  identity {
    type = "SystemAssigned"
  }

  body = {
    properties = {
      authMode            = "Key"
      publicNetworkAccess = var.endpoint_public_network_access ? "Enabled" : "Disabled"
      description         = "derm-cloud adapter: triage support, not a diagnosis; a clinician reviews every result"
    }
  }

  tags = local.tags
}

resource "azapi_resource" "deployment" {
  count     = local.deploy ? 1 : 0
  type      = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments@2024-10-01"
  name      = "blue"
  parent_id = azapi_resource.endpoint.id
  location  = azurerm_resource_group.derm.location

  body = {
    sku = {
      name     = "Default"
      capacity = var.instance_count
    }
    properties = {
      endpointComputeType       = "Managed"
      model                     = var.model_asset_id
      environmentId             = var.environment_asset_id
      instanceType              = var.instance_type
      appInsightsEnabled        = true
      egressPublicNetworkAccess = "Disabled" # the scoring container needs no outbound network
      codeConfiguration = {
        codeId        = var.code_asset_id
        scoringScript = "score.py"
      }
      scaleSettings = {
        scaleType = "Default"
      }
      requestSettings = {
        requestTimeout                   = "PT5S"
        maxConcurrentRequestsPerInstance = 1
      }
    }
  }

  tags = local.tags
}

resource "azapi_update_resource" "traffic" {
  count       = local.deploy ? 1 : 0
  type        = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints@2024-10-01"
  resource_id = azapi_resource.endpoint.id

  body = {
    properties = {
      traffic = { blue = 100 }
    }
  }

  depends_on = [azapi_resource.deployment]
}

resource "azurerm_monitor_autoscale_setting" "deployment" {
  count               = local.deploy ? 1 : 0
  name                = "${var.name}-deployment-autoscale"
  location            = azurerm_resource_group.derm.location
  resource_group_name = azurerm_resource_group.derm.name
  target_resource_id  = azapi_resource.deployment[0].id

  profile {
    name = "cpu"

    capacity {
      default = var.instance_count
      minimum = var.min_instance_count
      maximum = var.max_instance_count
    }

    rule {
      metric_trigger {
        metric_name        = "CpuUtilizationPercentage"
        metric_resource_id = azapi_resource.deployment[0].id
        time_grain         = "PT1M"
        statistic          = "Average"
        time_window        = "PT5M"
        time_aggregation   = "Average"
        operator           = "GreaterThan"
        threshold          = 70
      }

      scale_action {
        direction = "Increase"
        type      = "ChangeCount"
        value     = "1"
        cooldown  = "PT5M"
      }
    }

    rule {
      metric_trigger {
        metric_name        = "CpuUtilizationPercentage"
        metric_resource_id = azapi_resource.deployment[0].id
        time_grain         = "PT1M"
        statistic          = "Average"
        time_window        = "PT10M"
        time_aggregation   = "Average"
        operator           = "LessThan"
        threshold          = 25
      }

      scale_action {
        direction = "Decrease"
        type      = "ChangeCount"
        value     = "1"
        cooldown  = "PT10M"
      }
    }
  }

  tags = local.tags
}
