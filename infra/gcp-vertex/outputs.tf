output "endpoint_id" {
  description = "Pass to derm_cloud.create(\"vertex\", endpoint_id=..., project=..., location=..., schema=\"custom\")."
  value       = google_vertex_ai_endpoint.adapter.name
}

output "image" {
  description = "Build pkg/container and push it here."
  value       = local.image
}

output "model_artifact_uri" {
  description = "Optional: copy pkg/model here and pass it as --artifact-uri (the image already holds the model)."
  value       = local.model_uri
}

output "serving_service_account" {
  description = "The least-privilege identity the deployed model runs as."
  value       = google_service_account.serving.email
}

output "kms_key" {
  description = "The CMEK key of the bucket, repository and endpoint."
  value       = google_kms_crypto_key.derm.id
}

output "deploy_commands" {
  description = "The two steps terraform cannot express: upload the model, then deploy it to the endpoint."
  value = [
    "gcloud ai models upload --project=${var.project} --region=${var.region} --display-name=${var.name} --container-image-uri=${local.image} --container-ports=8080 --container-health-route=/health --container-predict-route=/predict --artifact-uri=${local.model_uri}",
    "gcloud ai endpoints deploy-model ${google_vertex_ai_endpoint.adapter.name} --project=${var.project} --region=${var.region} --model=<MODEL_ID from the upload> --display-name=${var.name} --machine-type=${var.machine_type} --min-replica-count=${var.min_replica_count} --max-replica-count=${var.max_replica_count} --service-account=${google_service_account.serving.email} --traffic-split=0=100",
  ]
}
