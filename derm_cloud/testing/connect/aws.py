"""Connection details of the AWS emulators: SageMaker runtime and Rekognition Custom Labels (boto3)."""

from __future__ import annotations

from typing import Any

from derm_cloud.testing.connect.snippet import DUMMY_AWS_KEY, IMAGE

__all__ = ["rekognition", "sagemaker"]


def sagemaker(emu: Any) -> dict[str, Any]:
    name = next(iter(emu.endpoints))
    endpoint = emu.endpoints[name]
    url, region = emu.url, emu.region
    return {
        "sdk": "boto3",
        "region": region,
        "endpoint_name": name,
        "response_format": endpoint.response_format,
        "serverless": bool(endpoint.serverless),
        "aws_access_key_id": DUMMY_AWS_KEY,
        "aws_secret_access_key": DUMMY_AWS_KEY,
        "env": {
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url,
            "AWS_ACCESS_KEY_ID": DUMMY_AWS_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_AWS_KEY,
            "AWS_DEFAULT_REGION": region,
        },
        "backend": {
            "type": "sagemaker",
            "options": {"endpoint_name": name, "region": region, "response_format": endpoint.response_format},
        },
        "python_sdk": (
            "import boto3\n\n"
            "client = boto3.client(\n"
            '    "sagemaker-runtime",\n'
            f"    endpoint_url={url!r},\n"
            f"    region_name={region!r},\n"
            "    # dummy keys: boto3 will not send an unsigned request; the emulator checks no signature\n"
            f"    aws_access_key_id={DUMMY_AWS_KEY!r},\n"
            f"    aws_secret_access_key={DUMMY_AWS_KEY!r},\n"
            ")\n"
            f"with open({IMAGE!r}, 'rb') as f:\n"
            "    answer = client.invoke_endpoint(\n"
            f"        EndpointName={name!r}, ContentType='application/x-image', Accept='application/json', "
            "Body=f.read()\n"
            "    )\n"
            "print(answer['Body'].read().decode())\n"
        ),
        "notes": [
            "boto3 needs credentials to sign requests: any non-empty keys work against the emulator",
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME points only sagemaker-runtime at the emulator (boto3 >= 1.28.57)",
        ],
    }


def rekognition(emu: Any) -> dict[str, Any]:
    url, region, arn = emu.url, emu.region, emu.project_version_arn
    return {
        "sdk": "boto3 (rekognition)",
        "region": region,
        "project_version_arn": arn,
        "aws_access_key_id": DUMMY_AWS_KEY,
        "aws_secret_access_key": DUMMY_AWS_KEY,
        "env": {
            "AWS_ENDPOINT_URL_REKOGNITION": url,
            "AWS_ACCESS_KEY_ID": DUMMY_AWS_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_AWS_KEY,
            "AWS_DEFAULT_REGION": region,
        },
        "backend": {
            "type": "rekognition-custom-labels",
            "options": {"project_version_arn": arn, "region": region, "endpoint_url": url},
        },
        "python_sdk": (
            "import boto3\n\n"
            "client = boto3.client(\n"
            '    "rekognition",\n'
            f"    endpoint_url={url!r},\n"
            f"    region_name={region!r},\n"
            "    # dummy keys: boto3 will not send an unsigned request; the emulator checks no signature\n"
            f"    aws_access_key_id={DUMMY_AWS_KEY!r},\n"
            f"    aws_secret_access_key={DUMMY_AWS_KEY!r},\n"
            ")\n"
            f"with open({IMAGE!r}, 'rb') as f:\n"
            f"    answer = client.detect_custom_labels(ProjectVersionArn={arn!r}, Image={{'Bytes': f.read()}}, "
            "MinConfidence=0)\n"
            "print([(label['Name'], round(label['Confidence'], 2)) for label in answer['CustomLabels']])\n"
        ),
        "notes": [
            "the model version starts RUNNING; stop_project_version / start_project_version work as in the service",
            "Confidence is 0-100; MinConfidence=0 returns every label",
        ],
    }
