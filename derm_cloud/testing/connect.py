"""How to point each cloud SDK (and each derm-cloud backend) at a running emulator, ready to copy.

:func:`connection` describes one running emulator as plain data: its URL, the names a client needs (endpoint,
project, deployment ...), the dummy credentials the SDK insists on, the environment variables the SDK or the
derm-cloud backend reads, the ``derm_cloud.create`` arguments, and two Python snippets (the provider's own SDK,
and derm-cloud) that run verbatim against the emulator. ``derm-cloud emulate`` prints it; ``--json`` prints the
dict. Every value is a string, a number, a list or a dict, never ``None``, so a script can read any field.

Example:
    >>> from derm_cloud.testing.launch import start  # doctest: +SKIP
    >>> info = connection("sagemaker", start("sagemaker", model_dir, options={}, transport=None))  # doctest: +SKIP
    >>> info["env"]["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"]  # doctest: +SKIP
    'http://127.0.0.1:40123'
"""

from __future__ import annotations

from typing import Any

__all__ = ["DUMMY_AWS_KEY", "connection", "render_text"]

#: boto3 signs every request and refuses to without credentials; the emulator checks no signature.
DUMMY_AWS_KEY = "testing"

_IMAGE = "lesion.jpg"


def connection(kind: str, emulator: Any) -> dict[str, Any]:
    """Connection details for a running emulator of ``kind`` (a backend type such as ``"sagemaker"``).

    Args:
        kind: one of ``sagemaker``, ``azure-ml``, ``azure-custom-vision``, ``vertex``, ``google-vision``,
            ``azure-openai``, ``vertex-gemini``, ``rekognition-custom-labels``.
        emulator: the running emulator (from :func:`derm_cloud.testing.launch.start` or its own class).

    Returns:
        A JSON-compatible dict with ``kind``, ``url``, ``sdk``, the cloud's own fields (flat), ``env``,
        ``backend`` (``{"type", "options"}`` for ``derm_cloud.create``), ``python_sdk`` and ``python_derm_cloud``
        (snippets that classify ``lesion.jpg``) and ``notes``.

    Raises:
        ValueError: ``kind`` is not an emulated cloud.
    """
    builders = {
        "sagemaker": _sagemaker,
        "azure-ml": _azure_ml,
        "azure-custom-vision": _custom_vision,
        "vertex": _vertex,
        "google-vision": _cloud_vision,
        "azure-openai": _azure_openai,
        "vertex-gemini": _gemini,
        "rekognition-custom-labels": _rekognition,
    }
    if kind not in builders:
        raise ValueError(f"no emulator connection details for {kind!r}; choose from {', '.join(builders)}")
    info: dict[str, Any] = {"kind": kind, "url": emulator.url}
    info.update(builders[kind](emulator))
    info["python_derm_cloud"] = _derm_cloud_snippet(info)
    return info


def _sagemaker(emu: Any) -> dict[str, Any]:
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
            f"with open({_IMAGE!r}, 'rb') as f:\n"
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


def _azure_ml(emu: Any) -> dict[str, Any]:
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
            f"with open({_IMAGE!r}, 'rb') as f:\n"
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


def _custom_vision(emu: Any) -> dict[str, Any]:
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
            f"with open({_IMAGE!r}, 'rb') as f:\n"
            f"    result = client.classify_image_with_no_store({project!r}, {published!r}, f.read())\n"
            "print([(p.tag_name, round(p.probability, 3)) for p in result.predictions])\n"
        ),
        "notes": ["classify_image_with_no_store: the storing route keeps prediction images for 30 days"],
    }


def _vertex(emu: Any) -> dict[str, Any]:
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
            f"with open({_IMAGE!r}, 'rb') as f:\n"
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


def _cloud_vision(emu: Any) -> dict[str, Any]:
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
            f"with open({_IMAGE!r}, 'rb') as f:\n"
            "    answer = client.label_detection(image=vision.Image(content=f.read()))\n"
            "print([(label.description, round(label.score, 3)) for label in answer.label_annotations])\n"
        ),
        "notes": ["generic labels, not lesion classes: a latency and cost baseline only (allow_unmapped)"],
    }


def _azure_openai(emu: Any) -> dict[str, Any]:
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
            f"with open({_IMAGE!r}, 'rb') as f:\n"
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


def _gemini(emu: Any) -> dict[str, Any]:
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
            f"with open({_IMAGE!r}, 'rb') as f:\n"
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


def _rekognition(emu: Any) -> dict[str, Any]:
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
            f"with open({_IMAGE!r}, 'rb') as f:\n"
            f"    answer = client.detect_custom_labels(ProjectVersionArn={arn!r}, Image={{'Bytes': f.read()}}, "
            "MinConfidence=0)\n"
            "print([(label['Name'], round(label['Confidence'], 2)) for label in answer['CustomLabels']])\n"
        ),
        "notes": [
            "the model version starts RUNNING; stop_project_version / start_project_version work as in the service",
            "Confidence is 0-100; MinConfidence=0 returns every label",
        ],
    }


def _derm_cloud_snippet(info: dict[str, Any]) -> str:
    """``derm_cloud.create`` with the emulator's options (secrets come from ``env`` where the backend reads it)."""
    backend = info["backend"]
    lines = ["import derm_cloud", ""]
    options = dict(backend["options"])
    extra = ""
    if backend["type"] in ("vertex", "google-vision") and not options.get("api_key"):
        if options.get("transport") == "grpc":
            lines.insert(0, "import grpc")
            extra = f"    channel=grpc.insecure_channel({info['grpc_target']!r}),\n"
        else:
            lines.insert(0, "from google.auth.credentials import AnonymousCredentials")
            extra = "    credentials=AnonymousCredentials(),\n"
    if backend["type"] == "vertex-gemini":
        lines.insert(0, "from google.oauth2.credentials import Credentials")
        extra = "    credentials=Credentials(token='emulator-token'),\n"
    if backend["type"] in ("sagemaker", "rekognition-custom-labels"):
        lines.insert(0, "# with the environment variables above set (the dummy AWS keys and the endpoint URL)")
        options["endpoint_url"] = info["url"]
    if backend["type"] == "azure-openai":
        options["api_key"] = info["api_key"]
    args = "".join(f"    {name}={value!r},\n" for name, value in options.items())
    lines.append(f"with derm_cloud.create(\n    {backend['type']!r},\n{args}{extra}) as clf:")
    lines.append(f"    print(clf.predict({_IMAGE!r}).top(3))")
    return "\n".join(lines) + "\n"


def render_text(info: dict[str, Any]) -> str:
    """A human-readable block for one emulator: environment lines to paste into a shell, then both snippets."""
    out = [f"== {info['kind']}  {info['url']}  (emulated; test keys only)"]
    skip = {"kind", "url", "env", "backend", "python_sdk", "python_derm_cloud", "notes", "sdk", "labels"}
    facts = ", ".join(f"{k}={v}" for k, v in info.items() if k not in skip and v not in ("", None))
    if facts:
        out.append(f"   {facts}")
    if info["env"]:
        out.append("   environment (read by the SDK and the derm-cloud backend):")
        out.extend(f"     export {name}={value}" for name, value in info["env"].items())
    out.append(f"   {info['sdk']}:")
    out.extend(f"     {line}".rstrip() for line in info["python_sdk"].splitlines())
    out.append("   derm-cloud:")
    out.extend(f"     {line}".rstrip() for line in info["python_derm_cloud"].splitlines())
    out.extend(f"   note: {note}" for note in info["notes"])
    return "\n".join(out)
