terraform {
  required_version = ">= 1.5.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.42, < 5.0" # rbac_authorization_enabled on azurerm_key_vault arrived in 4.42
    }
    # azurerm has no managed online endpoint or deployment resource: those go through the ARM API (azapi).
    azapi = {
      source  = "Azure/azapi"
      version = ">= 2.0, < 3.0"
    }
  }
}

provider "azurerm" {
  features {
    key_vault {
      purge_soft_delete_on_destroy = false # keep the CMK recoverable: losing it loses the workspace data
    }
  }
  storage_use_azuread = true # the storage account has shared keys disabled for users; use Entra ID
}

provider "azapi" {}
