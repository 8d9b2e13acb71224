variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Region of the endpoint, key, bucket and image repository (Vertex AI needs them in one region for CMEK)."
  type        = string
  default     = "europe-west4"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "derm-cloud"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name))
    error_message = "name must be 3-21 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "endpoint_id" {
  description = "Numeric id of the Vertex AI endpoint (at most 10 digits, no leading zero): pass it to derm_cloud.create(\"vertex\", endpoint_id=...)."
  type        = string
  default     = "4242424242"

  validation {
    condition     = can(regex("^[1-9][0-9]{0,9}$", var.endpoint_id))
    error_message = "endpoint_id must be 1-10 digits without a leading zero."
  }
}

variable "image_tag" {
  description = "Tag of the derm-cloud Vertex image pushed to the Artifact Registry repository this module creates."
  type        = string
  default     = "0.1.0"
}

variable "machine_type" {
  description = "Machine type of the deployed model (used by the deploy-model command in the outputs)."
  type        = string
  default     = "n1-standard-2"
}

variable "min_replica_count" {
  description = "Smallest number of serving nodes (Vertex bills each node while the model is deployed; no scale to zero)."
  type        = number
  default     = 1
}

variable "max_replica_count" {
  description = "Largest number of serving nodes (autoscaling on CPU)."
  type        = number
  default     = 2
}

variable "labels" {
  description = "Labels added to every resource that takes them."
  type        = map(string)
  default     = {}
}
