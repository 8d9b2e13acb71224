# derm-cloud serving adapter on Amazon SageMaker: one model, a real-time and a serverless endpoint configuration,
# and an endpoint using the one chosen by var.endpoint_type.
#
# Artefacts come from `derm-cloud deploy package --cloud sagemaker MODEL_DIR --out pkg`:
#   pkg/model.tar.gz  -> s3://<models bucket>/<var.model_prefix>/model.tar.gz  (SSE-KMS with the key below)
#   pkg/container/    -> docker build + push to the ECR repository below, tag var.image_tag
# Apply in two steps: `terraform apply -target=aws_s3_bucket.models -target=aws_ecr_repository.adapter ...`,
# upload both, then `terraform apply`.
#
# Data handling: no data capture is configured, so SageMaker keeps no request or response (no images at rest);
# the container runs with network isolation (no outbound network at all).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id     = data.aws_caller_identity.current.account_id
  partition      = data.aws_partition.current.partition
  model_data_key = "${var.model_prefix}/model.tar.gz"
  log_group_arn  = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/aws/sagemaker/Endpoints/${var.name}"
}

# --- encryption at rest: one customer-managed key, rotated yearly ---------------------------------------------------

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:a key policy's Resource "*" means this key only; the statement is the account-root default that lets IAM policies grant use of the key
  #checkov:skip=CKV_AWS_111:same: key policies cannot name a narrower resource than the key itself
  #checkov:skip=CKV_AWS_356:same: Resource "*" in a key policy is the key itself
  statement {
    sid       = "AccountAdministersKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "derm" {
  description             = "${var.name}: model artefacts, endpoint storage volumes and the adapter image"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "derm" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.derm.key_id
}

# --- the model bucket: private, versioned, SSE-KMS, TLS only ---------------------------------------------------------

resource "aws_s3_bucket" "models" {
  #checkov:skip=CKV_AWS_18:server access logs need a separate log bucket owned by the organisation's logging account; use CloudTrail S3 data events for model reads
  #checkov:skip=CKV_AWS_144:cross-region replication is a disaster-recovery choice; the model is rebuilt from PyPI by `derm-cloud models fetch` and re-uploaded
  #checkov:skip=CKV2_AWS_62:no consumer of object events; uploads are deliberate deploy steps
  bucket_prefix = "${var.name}-models-"
}

resource "aws_s3_bucket_public_access_block" "models" {
  bucket                  = aws_s3_bucket.models.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "models" {
  bucket = aws_s3_bucket.models.id

  rule {
    object_ownership = "BucketOwnerEnforced" # ACLs off: access is decided by IAM and the bucket policy only
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "models" {
  bucket = aws_s3_bucket.models.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.derm.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "models" {
  bucket = aws_s3_bucket.models.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "models" {
  bucket = aws_s3_bucket.models.id

  rule {
    id     = "expire-old-model-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = 90
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.models]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.models.arn, "${aws_s3_bucket.models.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyUploadsWithoutTheKey"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.models.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringNotEqualsIfExists"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = [aws_kms_key.derm.arn]
    }
  }
}

resource "aws_s3_bucket_policy" "models" {
  bucket     = aws_s3_bucket.models.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.models]
}

# --- the adapter image ------------------------------------------------------------------------------------------

resource "aws_ecr_repository" "adapter" {
  name                 = "${var.name}-sagemaker"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.derm.arn
  }
}

# --- the execution role: read this model prefix, pull this image, write this endpoint's logs ---------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-sagemaker-execution"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "ReadTheModelArchive"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.models.arn}/${var.model_prefix}/*"]
  }

  statement {
    sid       = "ListTheModelPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.models.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.model_prefix}/*"]
    }
  }

  statement {
    sid       = "UseTheKey"
    actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey", "kms:CreateGrant"]
    resources = [aws_kms_key.derm.arn]
  }

  statement {
    sid       = "PullTheAdapterImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [aws_ecr_repository.adapter.arn]
  }

  statement {
    # GetAuthorizationToken has no resource-level permissions: "*" is the only valid resource.
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "WriteThisEndpointsLogs"
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = [local.log_group_arn, "${local.log_group_arn}:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "${var.name}-least-privilege"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- model, endpoint configurations, endpoint ---------------------------------------------------------------------

resource "aws_sagemaker_model" "adapter" {
  name                     = "${var.name}-model"
  execution_role_arn       = aws_iam_role.execution.arn
  enable_network_isolation = true

  primary_container {
    image          = "${aws_ecr_repository.adapter.repository_url}:${var.image_tag}"
    model_data_url = "s3://${aws_s3_bucket.models.id}/${local.model_data_key}"
    environment = {
      DERM_CLOUD_SAGEMAKER_FORMAT = "adapter"
    }
  }

  depends_on = [aws_iam_role_policy.execution]
}

resource "aws_sagemaker_endpoint_configuration" "realtime" {
  name_prefix = "${var.name}-rt-"
  kms_key_arn = aws_kms_key.derm.arn # encrypts the instances' storage volumes

  production_variants {
    variant_name           = "AllTraffic"
    model_name             = aws_sagemaker_model.adapter.name
    instance_type          = var.instance_type
    initial_instance_count = var.initial_instance_count
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_sagemaker_endpoint_configuration" "serverless" {
  name_prefix = "${var.name}-sl-"
  kms_key_arn = aws_kms_key.derm.arn

  production_variants {
    variant_name = "AllTraffic"
    model_name   = aws_sagemaker_model.adapter.name

    serverless_config {
      memory_size_in_mb = var.serverless_memory_mb
      max_concurrency   = var.serverless_max_concurrency
    }
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_sagemaker_endpoint" "adapter" {
  name                 = var.name
  endpoint_config_name = var.endpoint_type == "serverless" ? aws_sagemaker_endpoint_configuration.serverless.name : aws_sagemaker_endpoint_configuration.realtime.name
}

# --- scaling (real-time only; serverless scales by itself) ---------------------------------------------------------

resource "aws_appautoscaling_target" "variant" {
  count              = var.endpoint_type == "realtime" ? 1 : 0
  service_namespace  = "sagemaker"
  resource_id        = "endpoint/${aws_sagemaker_endpoint.adapter.name}/variant/AllTraffic"
  scalable_dimension = "sagemaker:variant:DesiredInstanceCount"
  min_capacity       = var.min_instance_count
  max_capacity       = var.max_instance_count
}

resource "aws_appautoscaling_policy" "invocations" {
  count              = var.endpoint_type == "realtime" ? 1 : 0
  name               = "${var.name}-invocations-per-instance"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.variant[0].service_namespace
  resource_id        = aws_appautoscaling_target.variant[0].resource_id
  scalable_dimension = aws_appautoscaling_target.variant[0].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.target_invocations_per_instance
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "SageMakerVariantInvocationsPerInstance"
    }
  }
}
