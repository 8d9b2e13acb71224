output "workspace_name" {
  description = "Register the packaged model, code and environment here (az ml ... -w <this>)."
  value       = azurerm_machine_learning_workspace.derm.name
}

output "resource_group_name" {
  description = "Resource group of every resource."
  value       = azurerm_resource_group.derm.name
}

output "endpoint_name" {
  description = "Pass to derm_cloud.create(\"azure-ml\", endpoint_name=...); the scoring URI and key come from `az ml online-endpoint show/get-credentials`."
  value       = azapi_resource.endpoint.name
}

output "key_vault_key_id" {
  description = "The customer-managed key encrypting the workspace, storage and registry."
  value       = azurerm_key_vault_key.cmk.id
}
