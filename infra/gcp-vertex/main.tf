# derm-cloud serving adapter on a Vertex AI endpoint, with customer-managed encryption keys (CMEK) throughout.
#
# Creates: a KMS key (rotated every 90 days), a private model bucket and an image repository encrypted with it,
# a serving service account that may only read that bucket and that repository, and the endpoint (CMEK).
#
# What terraform cannot express: the google provider has no resource that uploads a Model to the Vertex AI
# Model Registry or deploys it to an endpoint (deployedModels is output-only on google_vertex_ai_endpoint).
# Those two steps are gcloud commands, printed ready to run by the `deploy_commands` output, using the image
# built from `derm-cloud deploy package --cloud vertex MODEL_DIR --out pkg` (pkg/container) and, optionally,
# the model folder (pkg/model) copied to the bucket as the artifact URI.

data "google_project" "current" {
  project_id = var.project
}

data "google_storage_project_service_account" "gcs" {
  project = var.project
}

locals {
  vertex_agent   = "serviceAccount:service-${data.google_project.current.number}@gcp-sa-aiplatform.iam.gserviceaccount.com"
  registry_agent = "serviceAccount:service-${data.google_project.current.number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
  storage_agent  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
  labels         = merge(var.labels, { "derm-cloud-component" = "vertex-adapter" })
  image          = "${var.region}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.adapter.repository_id}/derm-cloud-vertex:${var.image_tag}"
  model_uri      = "gs://${google_storage_bucket.models.name}/models/"
}

# --- the customer-managed key -----------------------------------------------------------------------------------

resource "google_kms_key_ring" "derm" {
  name     = "${var.name}-keys"
  location = var.region
}

resource "google_kms_crypto_key" "derm" {
  name            = "${var.name}-cmek"
  key_ring        = google_kms_key_ring.derm.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = "7776000s" # 90 days

  lifecycle {
    prevent_destroy = true # destroying the key makes the bucket, images and endpoint data unreadable
  }
}

# Each Google service agent that encrypts with the key gets exactly encrypt/decrypt on this key.
resource "google_kms_crypto_key_iam_member" "vertex" {
  crypto_key_id = google_kms_crypto_key.derm.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.vertex_agent
}

resource "google_kms_crypto_key_iam_member" "storage" {
  crypto_key_id = google_kms_crypto_key.derm.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.storage_agent
}

resource "google_kms_crypto_key_iam_member" "registry" {
  crypto_key_id = google_kms_crypto_key.derm.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.registry_agent
}

# --- the model bucket: private, uniform access, CMEK, versioned --------------------------------------------------

resource "google_storage_bucket" "models" {
  #checkov:skip=CKV_GCP_62:access logs need a separate log bucket owned by the organisation; use Cloud Audit Logs data-access logs for model reads
  name                        = "${var.project}-${var.name}-models"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  encryption {
    default_kms_key_name = google_kms_crypto_key.derm.id
  }

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 90
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.storage]
}

# --- the adapter image repository -------------------------------------------------------------------------------

resource "google_artifact_registry_repository" "adapter" {
  repository_id = "${var.name}-images"
  location      = var.region
  format        = "DOCKER"
  kms_key_name  = google_kms_crypto_key.derm.id
  labels        = local.labels

  docker_config {
    immutable_tags = true
  }

  depends_on = [google_kms_crypto_key_iam_member.registry]
}

# --- the serving identity: read this bucket and this repository, nothing else -------------------------------------

resource "google_service_account" "serving" {
  account_id   = "${var.name}-serving"
  display_name = "derm-cloud Vertex AI serving container"
  description  = "Runs the derm-cloud adapter; may read the model bucket and pull the adapter image only."
}

resource "google_storage_bucket_iam_member" "serving_reads_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.serving.email}"
}

resource "google_artifact_registry_repository_iam_member" "serving_pulls_image" {
  repository = google_artifact_registry_repository.adapter.name
  location   = google_artifact_registry_repository.adapter.location
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.serving.email}"
}

resource "google_artifact_registry_repository_iam_member" "vertex_pulls_image" {
  repository = google_artifact_registry_repository.adapter.name
  location   = google_artifact_registry_repository.adapter.location
  role       = "roles/artifactregistry.reader"
  member     = local.vertex_agent
}

# --- the endpoint -----------------------------------------------------------------------------------------------

resource "google_vertex_ai_endpoint" "adapter" {
  #checkov:skip=CKV2_GCP_33:a private endpoint needs VPC peering into the caller's network, which this module does not own; the public endpoint still requires IAM (aiplatform.endpoints.predict) on every call, with no anonymous access
  name         = var.endpoint_id
  display_name = "${var.name}-adapter"
  description  = "derm-cloud adapter: triage support, not a diagnosis; a clinician reviews every result"
  location     = var.region
  labels       = local.labels

  encryption_spec {
    kms_key_name = google_kms_crypto_key.derm.id
  }

  depends_on = [google_kms_crypto_key_iam_member.vertex]
}
