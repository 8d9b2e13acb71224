variable "location" {
  description = "Azure region of every resource."
  type        = string
  default     = "westeurope"
}

variable "name" {
  description = "Prefix of every resource name (lower-case letters and digits, 3-12 characters)."
  type        = string
  default     = "dermcloud"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,11}$", var.name))
    error_message = "name must be 3-12 lower-case letters or digits, starting with a letter (storage and key vault names are short)."
  }
}

variable "endpoint_name" {
  description = "Managed online endpoint name (unique in the region): pass it to derm_cloud.create(\"azure-ml\", endpoint_name=...)."
  type        = string
  default     = "derm-cloud"
}

variable "instance_type" {
  description = "VM size of the online deployment."
  type        = string
  default     = "Standard_DS3_v2"
}

variable "instance_count" {
  description = "Instances the deployment starts with."
  type        = number
  default     = 1
}

variable "min_instance_count" {
  description = "Autoscale floor (managed online endpoints do not scale to zero)."
  type        = number
  default     = 1
}

variable "max_instance_count" {
  description = "Autoscale ceiling."
  type        = number
  default     = 3
}

variable "model_asset_id" {
  description = "ARM id of the registered model version (from `az ml model create --path <package>/model`); null: create the endpoint only."
  type        = string
  default     = null
}

variable "code_asset_id" {
  description = "ARM id of the code version holding score.py (from the package's code/ folder)."
  type        = string
  default     = null
}

variable "environment_asset_id" {
  description = "ARM id of the environment version built from the package's environment/conda.yaml."
  type        = string
  default     = null
}

variable "workspace_public_network_access" {
  description = "Whether the workspace (studio, asset uploads) is reachable from the internet. Keep false and use a private endpoint; set true only for the duration of a deploy from outside the network."
  type        = bool
  default     = false
}

variable "endpoint_public_network_access" {
  description = "Whether the scoring endpoint accepts calls from the internet (key auth, TLS). false: private endpoint only."
  type        = bool
  default     = false
}

variable "key_expiration_date" {
  description = "Expiry of the customer-managed key version (RFC 3339); the rotation policy makes a new version before it."
  type        = string
  default     = "2028-12-31T00:00:00Z"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
