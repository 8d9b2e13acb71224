"""Deployment helpers: create (and delete) the cloud resources that the backends call.

Kept apart from the backends on purpose: classifying needs only each cloud's runtime API, while deploying pulls
in heavier SDKs whose major versions break (SageMaker SDK v3 removed v2's `JumpStartModel`). Import the
module you need; nothing here is imported by `import derm_cloud`.

* `derm_cloud.deploy.sagemaker_jumpstart`: JumpStart models through the SageMaker SDK v3 `ModelBuilder`,
  and any container image (e.g. `adapters/sagemaker`) through boto3's control plane, real-time or serverless.
"""
