variable "region" {
  description = "AWS region of every resource (the model bucket, key, image repository and endpoint)."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Prefix of every resource name; also the endpoint name."
  type        = string
  default     = "derm-cloud"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,40}$", var.name))
    error_message = "name must be 3-41 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "endpoint_type" {
  description = "Which endpoint configuration the endpoint uses: \"realtime\" (instances, always on) or \"serverless\" (pay per use, cold starts)."
  type        = string
  default     = "realtime"

  validation {
    condition     = contains(["realtime", "serverless"], var.endpoint_type)
    error_message = "endpoint_type must be \"realtime\" or \"serverless\"."
  }
}

variable "image_tag" {
  description = "Tag of the derm-cloud SageMaker image pushed to the ECR repository this module creates (built from `derm-cloud deploy package --cloud sagemaker` container/)."
  type        = string
  default     = "0.1.0"
}

variable "model_prefix" {
  description = "S3 key prefix holding model.tar.gz in the model bucket; the execution role may read only below it."
  type        = string
  default     = "models/sklesion-0.2.2"
}

variable "instance_type" {
  description = "Real-time instance type. Instance types with local NVMe storage (ml.*d.*, ml.g4dn.*) cannot take a KMS key: keep an EBS-backed type."
  type        = string
  default     = "ml.m5.large"

  validation {
    condition     = !can(regex("^ml\\.[a-z0-9]+d\\.", var.instance_type)) && !startswith(var.instance_type, "ml.g4dn.")
    error_message = "instance types with local instance storage do not support a KMS key on the endpoint config; choose an EBS-backed type such as ml.m5.large."
  }
}

variable "initial_instance_count" {
  description = "Instances the real-time variant starts with."
  type        = number
  default     = 1
}

variable "min_instance_count" {
  description = "Autoscaling floor of the real-time variant."
  type        = number
  default     = 1
}

variable "max_instance_count" {
  description = "Autoscaling ceiling of the real-time variant."
  type        = number
  default     = 2
}

variable "target_invocations_per_instance" {
  description = "Autoscaling target: SageMakerVariantInvocationsPerInstance (invocations per instance per minute)."
  type        = number
  default     = 300
}

variable "serverless_memory_mb" {
  description = "Serverless memory (1024-6144 in 1024 steps); also sets the vCPUs and the price per second."
  type        = number
  default     = 2048

  validation {
    condition     = contains([1024, 2048, 3072, 4096, 5120, 6144], var.serverless_memory_mb)
    error_message = "serverless_memory_mb must be one of 1024, 2048, 3072, 4096, 5120, 6144."
  }
}

variable "serverless_max_concurrency" {
  description = "Serverless concurrent invocations (1-200)."
  type        = number
  default     = 5
}

variable "kms_deletion_window_days" {
  description = "Waiting period before a scheduled deletion of the KMS key takes effect."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
