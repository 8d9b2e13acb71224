"""Connection details of the Azure emulators: Azure ML endpoints, Custom Vision prediction, Azure OpenAI."""

from __future__ import annotations

from typing import Any

from derm_cloud.testing.connect.snippet import IMAGE

__all__ = ["azure_ml", "azure_openai", "custom_vision"]


def azure_ml(emu: Any) -> dict[str, Any]:
    uri, key = emu.scoring_uri, emu.key
    return {
        "sdk": "requests (AutoML for Images scoring contract); azure-ai-ml for management calls",
        "scoring_uri": uri,
        "key": key,
        "endpoint_name": emu.endpoint_name,
        "location": emu.location,
        "subscription_id": emu.subscription_id,
        "resource_group": emu.resource_group,
        "workspace": emu.workspace,
        "env": {"AZUREML_SCORING_URI": uri, "AZUREML_ENDPOINT_KEY": key, "AZUREML_DEV_URL_MFE": emu.url},
        "backend": {
            "type": "azure-ml",
            "options": {"scoring_uri": uri, "key": key, "endpoint_name": emu.endpoint_name, "region": emu.location},
        },
        "python_sdk": (
            "import base64\n\nimport requests\n\n"
            f"with open({IMAGE!r}, 'rb') as f:\n"
            "    image_b64 = base64.b64encode(f.read()).decode()\n"
            "answer = requests.post(\n"
            f"    {uri!r},\n"
            f"    headers={{'Authorization': 'Bearer ' + {key!r}}},\n"
            "    json={'input_data': {'columns': ['image'], 'data': [image_b64]}},\n"
            "    timeout=60,\n"
            ")\n"
            "answer.raise_for_status()\n"
            "print(answer.json())\n"
        ),
        "notes": [
            "azure-ai-ml's MLClient reaches the emulator's management routes when AZUREML_DEV_URL_MFE is set "
            "before the client is built (subscription_id, resource_group and workspace as above)",
        ],
    }


def custom_vision(emu: Any) -> dict[str, Any]:
    url, key = emu.url, emu.prediction_key
    project, published = emu.project_id, emu.published_name
    return {
        "sdk": "azure-cognitiveservices-vision-customvision",
        "endpoint": url,
        "prediction_key": key,
        "project_id": project,
        "published_name": published,
        "env": {"VISION_PREDICTION_ENDPOINT": url, "VISION_PREDICTION_KEY": key},
        "backend": {
            "type": "azure-custom-vision",
            "options": {"endpoint": url, "prediction_key": key, "project_id": project, "published_name": published},
        },
        "python_sdk": (
            "from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient\n"
            "from msrest.authentication import ApiKeyCredentials\n\n"
            "client = CustomVisionPredictionClient(\n"
            f"    {url!r}, ApiKeyCredentials(in_headers={{'Prediction-key': {key!r}}})\n"
            ")\n"
            f"with open({IMAGE!r}, 'rb') as f:\n"
            f"    result = client.classify_image_with_no_store({project!r}, {published!r}, f.read())\n"
            "print([(p.tag_name, round(p.probability, 3)) for p in result.predictions])\n"
        ),
        "notes": ["classify_image_with_no_store: the storing route keeps prediction images for 30 days"],
    }


def azure_openai(emu: Any) -> dict[str, Any]:
    from derm_cloud.backends.azure_openai import DEFAULT_API_VERSION

    deployment = sorted(emu.deployments)[0]
    return {
        "sdk": "openai (AzureOpenAI)",
        "azure_endpoint": emu.url,
        "api_key": emu.api_key,
        "api_version": DEFAULT_API_VERSION,
        "deployment": deployment,
        "env": {
            "AZURE_OPENAI_ENDPOINT": emu.url,
            "AZURE_OPENAI_API_KEY": emu.api_key,
            "OPENAI_API_VERSION": DEFAULT_API_VERSION,
        },
        "backend": {"type": "azure-openai", "options": {"azure_endpoint": emu.url, "deployment": deployment}},
        "python_sdk": (
            "import base64\n\n"
            "from openai import AzureOpenAI\n\n"
            "from derm_cloud.backends.azure_openai import DEFAULT_PROMPT, response_format\n\n"
            f"client = AzureOpenAI(azure_endpoint={emu.url!r}, api_key={emu.api_key!r}, "
            f"api_version={DEFAULT_API_VERSION!r})\n"
            f"with open({IMAGE!r}, 'rb') as f:\n"
            "    image_b64 = base64.b64encode(f.read()).decode()\n"
            "answer = client.chat.completions.create(\n"
            f"    model={deployment!r},\n"
            "    messages=[{'role': 'user', 'content': [\n"
            "        {'type': 'text', 'text': DEFAULT_PROMPT},\n"
            "        {'type': 'image_url', 'image_url': {'url': 'data:image/jpeg;base64,' + image_b64}},\n"
            "    ]}],\n"
            "    response_format=response_format(),\n"
            ")\n"
            "print(answer.choices[0].message.content)\n"
        ),
        "notes": ["the emulator answers the strict JSON schema of response_format() with the hosted model's scores"],
    }
