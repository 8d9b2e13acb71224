"""Connection details of the Google emulators: Vertex AI (REST or gRPC), Cloud Vision, Gemini on Vertex."""

from __future__ import annotations

from typing import Any

from derm_cloud.testing.connect.snippet import IMAGE

__all__ = ["cloud_vision", "gemini", "vertex"]


def vertex(emu: Any) -> dict[str, Any]:
    endpoint_id = emu.endpoint_id
    hosted = emu.endpoints[endpoint_id]
    transport = getattr(emu, "derm_transport", "rest")
    resource = emu.resource_name(endpoint_id)
    grpc_target = emu.grpc_target if transport == "grpc" else ""
    if transport == "grpc":
        client = (
            "import grpc\n"
            "from google.cloud.aiplatform_v1.services.prediction_service.transports import "
            "PredictionServiceGrpcTransport\n\n"
            "# plain-text gRPC: the SDK would build a TLS channel, so hand it an insecure one\n"
            "client = aiplatform_v1.PredictionServiceClient(\n"
            f"    transport=PredictionServiceGrpcTransport(channel=grpc.insecure_channel({grpc_target!r}))\n"
            ")\n"
        )
    else:
        client = (
            "# REST over plain http: the scheme in api_endpoint is required\n"
            "client = aiplatform_v1.PredictionServiceClient(\n"
            f"    client_options=ClientOptions(api_endpoint={emu.url!r}),\n"
            "    credentials=AnonymousCredentials(),\n"
            "    transport='rest',\n"
            ")\n"
        )
    instance = "{'content': image_b64}" if hosted.schema == "automl" else "{'b64': image_b64}"
    labels = list(hosted.server.labels)
    return {
        "sdk": "google-cloud-aiplatform (GAPIC PredictionServiceClient)",
        "transport": transport,
        "api_endpoint": emu.url,
        "grpc_target": grpc_target,
        "project": emu.project,
        "location": emu.location,
        "endpoint_id": endpoint_id,
        "endpoint_resource": resource,
        "schema": hosted.schema,
        "labels": labels,
        "env": {},
        "backend": {
            "type": "vertex",
            "options": {
                "endpoint_id": endpoint_id,
                "project": emu.project,
                "location": emu.location,
                "schema": hosted.schema,
                "transport": transport,
                **({"api_endpoint": emu.url} if transport == "rest" else {}),
                "labels": labels,
            },
        },
        "python_sdk": (
            "import base64\n\n"
            "from google.api_core.client_options import ClientOptions\n"
            "from google.auth.credentials import AnonymousCredentials\n"
            "from google.cloud import aiplatform_v1\n"
            "from google.protobuf import json_format, struct_pb2\n\n"
            f"{client}"
            f"with open({IMAGE!r}, 'rb') as f:\n"
            "    image_b64 = base64.b64encode(f.read()).decode()\n"
            "answer = client.predict(\n"
            f"    endpoint={resource!r},\n"
            f"    instances=[json_format.ParseDict({instance}, struct_pb2.Value())],\n"
            "    parameters=json_format.ParseDict({'confidenceThreshold': 0.0, 'maxPredictions': "
            f"{len(labels)}}}, struct_pb2.Value()),\n"
            ")\n"
            "print(list(answer.predictions))\n"
        ),
        "notes": [
            "the Google SDKs read no endpoint variable: pass api_endpoint (REST) or a channel (gRPC)",
            "aiplatform.Endpoint.raw_predict ignores custom endpoints: use predict",
        ],
    }


def cloud_vision(emu: Any) -> dict[str, Any]:
    key = emu.api_key or ""
    credentials = f"client_options=ClientOptions(api_endpoint={emu.url!r}, api_key={key!r})" if key else None
    if credentials is None:
        credentials = f"client_options=ClientOptions(api_endpoint={emu.url!r}),\n    credentials=AnonymousCredentials()"
    options: dict[str, Any] = {"api_endpoint": emu.url}
    if key:
        options["api_key"] = key
    return {
        "sdk": "google-cloud-vision (ImageAnnotatorClient, REST)",
        "api_endpoint": emu.url,
        "api_key": key,
        "env": {},
        "backend": {"type": "google-vision", "options": options},
        "python_sdk": (
            "from google.api_core.client_options import ClientOptions\n"
            "from google.auth.credentials import AnonymousCredentials\n"
            "from google.cloud import vision\n\n"
            "client = vision.ImageAnnotatorClient(\n"
            f"    {credentials},\n"
            "    transport='rest',\n"
            ")\n"
            f"with open({IMAGE!r}, 'rb') as f:\n"
            "    answer = client.label_detection(image=vision.Image(content=f.read()))\n"
            "print([(label.description, round(label.score, 3)) for label in answer.label_annotations])\n"
        ),
        "notes": ["generic labels, not lesion classes: a latency and cost baseline only (allow_unmapped)"],
    }


def gemini(emu: Any) -> dict[str, Any]:
    model = sorted(emu.models)[0]
    return {
        "sdk": "google-genai (Vertex AI mode)",
        "api_endpoint": emu.url,
        "project": emu.project,
        "location": emu.location,
        "model": model,
        "env": {"GOOGLE_CLOUD_PROJECT": emu.project, "GOOGLE_CLOUD_LOCATION": emu.location},
        "backend": {
            "type": "vertex-gemini",
            "options": {"model": model, "project": emu.project, "location": emu.location, "api_endpoint": emu.url},
        },
        "python_sdk": (
            "from google import genai\n"
            "from google.genai import types\n"
            "from google.oauth2.credentials import Credentials\n\n"
            "from derm_cloud.backends.azure_openai import DEFAULT_PROMPT\n"
            "from derm_cloud.backends.gcp_gemini import response_json_schema\n\n"
            "client = genai.Client(\n"
            f"    vertexai=True, project={emu.project!r}, location={emu.location!r},\n"
            "    # a static test token: the emulator wants a Bearer header and checks nothing else\n"
            "    credentials=Credentials(token='emulator-token'),\n"
            f"    http_options=types.HttpOptions(base_url={emu.url!r}),\n"
            ")\n"
            f"with open({IMAGE!r}, 'rb') as f:\n"
            "    image = types.Part.from_bytes(data=f.read(), mime_type='image/jpeg')\n"
            "answer = client.models.generate_content(\n"
            f"    model={model!r},\n"
            "    contents=[image, DEFAULT_PROMPT],\n"
            "    config=types.GenerateContentConfig(\n"
            "        response_mime_type='application/json', response_json_schema=response_json_schema()\n"
            "    ),\n"
            ")\n"
            "print(answer.text)\n"
        ),
        "notes": [
            "google-genai reads no endpoint variable: pass http_options=HttpOptions(base_url=...)",
            "the emulator's numbers are the hosted model's, rounded as an LLM writes them (self-reported)",
        ],
    }
