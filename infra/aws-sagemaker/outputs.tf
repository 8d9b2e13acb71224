output "endpoint_name" {
  description = "Pass to derm_cloud.create(\"sagemaker\", endpoint_name=..., region=...)."
  value       = aws_sagemaker_endpoint.adapter.name
}

output "endpoint_config_name" {
  description = "The endpoint configuration in use (real-time or serverless)."
  value       = aws_sagemaker_endpoint.adapter.endpoint_config_name
}

output "model_bucket" {
  description = "Upload model.tar.gz here, below model_prefix, with SSE-KMS and the key below."
  value       = aws_s3_bucket.models.id
}

output "model_data_url" {
  description = "Where the model archive must be."
  value       = "s3://${aws_s3_bucket.models.id}/${local.model_data_key}"
}

output "kms_key_arn" {
  description = "The customer-managed key encrypting the bucket, the endpoint volumes and the image repository."
  value       = aws_kms_key.derm.arn
}

output "ecr_repository_url" {
  description = "Push the adapter image here, tagged var.image_tag."
  value       = aws_ecr_repository.adapter.repository_url
}

output "execution_role_arn" {
  description = "The SageMaker execution role (least privilege)."
  value       = aws_iam_role.execution.arn
}
