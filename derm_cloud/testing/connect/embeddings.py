"""Connection details of the embedding-endpoint emulators: MedSigLIP / Derm Foundation on Vertex, MedImageInsight.

Each says, in `notes`, that the endpoint hosts a stand-in encoder and that its text vectors have no meaning.
"""

from __future__ import annotations

from typing import Any

from derm_cloud.testing.connect.snippet import IMAGE

__all__ = ["medimageinsight", "vertex_embeddings"]

_STAND_IN = "the endpoint hosts {model} as a stand-in for {provider}: vectors are the stand-in's, not the provider's"


def vertex_embeddings(emu: Any) -> dict[str, Any]:
    from derm_cloud.testing.emulators.embedding_host import TEXT_EMBEDDING_NOTE

    endpoint_id = emu.endpoint_id
    hosted = emu.embedding_endpoints[endpoint_id]
    api = hosted.serving_api
    resource = emu.resource_name(endpoint_id)
    instance = "{'image': {'input_bytes': image_b64}}" if api == "medsiglip" else "{'input_bytes': image_b64}"
    provider = "Google's MedSigLIP" if api == "medsiglip" else "Google's Derm Foundation"
    notes = [
        _STAND_IN.format(model=hosted.encoder.model_id, provider=provider),
        "the Google SDKs read no endpoint variable: pass api_endpoint with the http:// scheme",
    ]
    if api == "medsiglip":
        notes.append(TEXT_EMBEDDING_NOTE)
    return {
        "sdk": "google-cloud-aiplatform (GAPIC PredictionServiceClient, REST)",
        "embedder": True,
        "transport": "rest",
        "api_endpoint": emu.url,
        "project": emu.project,
        "location": emu.location,
        "endpoint_id": endpoint_id,
        "endpoint_resource": resource,
        "serving_api": api,
        "env": {},
        "backend": {
            "type": f"vertex-{api}",
            "options": {
                "endpoint_id": endpoint_id,
                "project": emu.project,
                "location": emu.location,
                "api_endpoint": emu.url,
            },
        },
        "python_sdk": (
            "import base64\n\n"
            "from google.api_core.client_options import ClientOptions\n"
            "from google.auth.credentials import AnonymousCredentials\n"
            "from google.cloud import aiplatform_v1\n\n"
            "# REST over plain http: the scheme in api_endpoint is required\n"
            "client = aiplatform_v1.PredictionServiceClient(\n"
            f"    client_options=ClientOptions(api_endpoint={emu.url!r}),\n"
            "    credentials=AnonymousCredentials(),\n"
            "    transport='rest',\n"
            ")\n"
            f"with open({IMAGE!r}, 'rb') as f:\n"
            "    image_b64 = base64.b64encode(f.read()).decode()\n"
            f"answer = client.predict(endpoint={resource!r}, instances=[{instance}])\n"
            "print(len(answer.predictions[0]['embedding']))\n"
        ),
        "notes": notes,
    }


def medimageinsight(emu: Any) -> dict[str, Any]:
    from derm_cloud.testing.emulators.embedding_host import TEXT_EMBEDDING_NOTE

    uri, key = emu.scoring_uri, emu.key
    hosted = next(iter(emu.encoders.values()))
    return {
        "sdk": "requests (MedImageInsight scoring schema); azure-ai-ml for management calls",
        "embedder": True,
        "scoring_uri": uri,
        "key": key,
        "endpoint_name": emu.endpoint_name,
        "location": emu.location,
        "env": {"MEDIMAGEINSIGHT_SCORING_URI": uri, "AZUREML_ENDPOINT_KEY": key, "AZUREML_DEV_URL_MFE": emu.url},
        "backend": {
            "type": "azure-medimageinsight",
            "options": {"scoring_uri": uri, "key": key, "endpoint_name": emu.endpoint_name, "region": emu.location},
        },
        "python_sdk": (
            "import base64\nimport io\n\nimport requests\nfrom PIL import Image\n\n"
            "png = io.BytesIO()\n"
            f"Image.open({IMAGE!r}).convert('RGB').save(png, format='PNG')  # the endpoint takes PNG only\n"
            "answer = requests.post(\n"
            f"    {uri!r},\n"
            f"    headers={{'Authorization': 'Bearer ' + {key!r}}},\n"
            "    json={\n"
            "        'input_data': {\n"
            "            'columns': ['image', 'text'],\n"
            "            'index': [0],\n"
            "            'data': [[base64.b64encode(png.getvalue()).decode(), '']],\n"
            "        },\n"
            "        'params': {'get_scaling_factor': True},\n"
            "    },\n"
            "    timeout=60,\n"
            ")\n"
            "answer.raise_for_status()\n"
            "print(len(answer.json()['image_features'][0]))\n"
        ),
        "notes": [
            _STAND_IN.format(model=hosted.model_id, provider="Microsoft's MedImageInsight"),
            TEXT_EMBEDDING_NOTE,
        ],
    }
