"""Drift between the vendored Azure specs and the installed SDKs, on the shapes our backends read.

The emulators are checked against the vendored specs, our backends are written against the SDKs: if the two stop
agreeing on a field we use (a new SDK release, a re-vendored spec), one of these tests fails and names the field.
"""

from __future__ import annotations

import typing
from typing import Any

import pytest
from spec_openapi import ApiSpec
from tests_helpers import DATA_DIR

SPECS = DATA_DIR / "specs" / "azure"  # not vendored: content read through the search tool stays out of commits
PREDICTION = ApiSpec(SPECS / "custom-vision-prediction-v3.1.json")  # the version the SDK speaks
TRAINING = ApiSpec(SPECS / "custom-vision-training-v3.3.json")
INFERENCE = ApiSpec(SPECS / "azure-openai-inference-2024-10-21.json")


def msrest_type(spec: ApiSpec, schema: dict[str, Any]) -> str:
    """The msrest ``_attribute_map`` type AutoRest generates for a Swagger property."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "array":
        return f"[{msrest_type(spec, schema['items'])}]"
    if kind == "string":
        return "iso-8601" if fmt == "date-time" else "str"
    return {"number": "float", "integer": "int", "boolean": "bool", "object": "{str}"}[kind]


def attribute_map(spec: ApiSpec, name: str) -> dict[str, tuple[str, str]]:
    """``{python_name: (json key, msrest type)}`` as AutoRest would generate it from the spec's definition."""
    import re

    out = {}
    for key, schema in spec.definitions[name]["properties"].items():
        python = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        out[python] = (key, msrest_type(spec, schema))
    return out


@pytest.mark.parametrize("name", ["ImagePrediction", "Prediction", "BoundingBox", "CustomVisionError"])
def test_custom_vision_prediction_models_match_the_spec(name: str) -> None:
    from azure.cognitiveservices.vision.customvision.prediction import models

    sdk = {k: (v["key"], v["type"]) for k, v in getattr(models, name)._attribute_map.items()}
    assert sdk == attribute_map(PREDICTION, name)


def test_custom_vision_error_codes_match_the_sdk_enum() -> None:
    from azure.cognitiveservices.vision.customvision.prediction.models import CustomVisionErrorCodes, TagType

    codes = PREDICTION.definitions["CustomVisionError"]["properties"]["code"]["enum"]
    assert codes == [c.value for c in CustomVisionErrorCodes]
    assert PREDICTION.definitions["Prediction"]["properties"]["tagType"]["enum"] == [t.value for t in TagType]


def test_custom_vision_export_model_matches_the_spec() -> None:
    from azure.cognitiveservices.vision.customvision.training import models

    sdk = {k: (v["key"], v["type"]) for k, v in models.Export._attribute_map.items()}
    assert sdk == attribute_map(TRAINING, "Export")
    # The SDK speaks 3.4-preview, newer than the v3.3 spec: it may know more values, never fewer.
    properties = TRAINING.definitions["Export"]["properties"]
    for field, enum in (("platform", models.ExportPlatform), ("status", models.ExportStatus),
                        ("flavor", models.ExportFlavor)):  # fmt: skip
        assert set(properties[field]["enum"]) <= {e.value for e in enum}, field
    codes = set(TRAINING.definitions["CustomVisionError"]["properties"]["code"]["enum"])
    assert codes <= {c.value for c in models.CustomVisionErrorCodes}


# --- Azure OpenAI: the inference spec against the openai SDK's pydantic types ------------------------------------

# Properties of Azure's answers that the openai SDK does not model; it keeps them as extra fields. Listed so that a
# spec or SDK change on either side shows up here.
AZURE_ONLY = {
    "createChatCompletionResponse": {"prompt_filter_results"},
    "choice": {"content_filter_results"},
    "chatCompletionResponseMessage": {"context"},
    "completionUsage": set(),
}


def _sdk_models() -> dict[str, Any]:
    from openai.types import CompletionUsage
    from openai.types.chat import ChatCompletion, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice

    return {
        "createChatCompletionResponse": ChatCompletion,
        "choice": Choice,
        "chatCompletionResponseMessage": ChatCompletionMessage,
        "completionUsage": CompletionUsage,
    }


def _spec_schema(name: str) -> dict[str, Any]:
    if name == "choice":
        return INFERENCE.definitions["createChatCompletionResponse"]["properties"]["choices"]["items"]
    schema: dict[str, Any] = INFERENCE.definitions[name]
    return schema


def _optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


@pytest.mark.parametrize("name", sorted(AZURE_ONLY))
def test_azure_openai_spec_and_openai_sdk_agree_on_the_completion(name: str) -> None:
    model = _sdk_models()[name]
    schema = _spec_schema(name)
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    spec_props = set(schema["properties"])
    assert spec_props - set(fields) == AZURE_ONLY[name]
    # A field the SDK requires (no default, not Optional) must be one the spec requires: otherwise a valid answer
    # could fail the SDK's own validation.
    sdk_required = {k for k, f in fields.items() if f.is_required() and not _optional(f.annotation)}
    assert sdk_required <= set(schema.get("required", [])), sdk_required - set(schema.get("required", []))
    for prop in spec_props & set(fields):
        spec_enum = schema["properties"][prop].get("enum")
        if spec_enum:  # every value the spec allows is one the SDK's Literal accepts
            allowed = set(typing.get_args(fields[prop].annotation))
            assert set(spec_enum) <= allowed, (prop, set(spec_enum) - allowed)
