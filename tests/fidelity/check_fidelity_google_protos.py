"""Google's published protos (read from the data folder: content read through the search tool stays out of
commits) against the installed SDK's descriptors. Run by hand until the protos are laid in shared/data/specs:
`DERM_CLOUD_DATA=/path/to/shared/data python -m pytest tests/fidelity/check_fidelity_google_protos.py`."""

from __future__ import annotations

import pytest
from spec_google import descriptor_fields, proto_fields
from test_fidelity_vertex import _types
from tests_helpers import DATA_DIR

SPECS = DATA_DIR / "specs" / "google"


@pytest.mark.parametrize(
    ("file", "message", "installed"),
    [
        ("classification.proto", "ClassificationPredictionResult", "automl"),
        ("aiplatform-v1-predict-response.proto", "PredictResponse", "predict"),
        ("aiplatform-v1-generate-content-response.proto", "GenerateContentResponse", "generate"),
        ("aiplatform-v1-generate-content-response.proto", "UsageMetadata", "usage"),
    ],
)
def test_vendored_protos_agree_with_the_installed_sdk(file: str, message: str, installed: str) -> None:
    from google.cloud import aiplatform_v1

    types = {
        **_types(),
        "generate": aiplatform_v1.GenerateContentResponse,
        "usage": aiplatform_v1.GenerateContentResponse.UsageMetadata,
    }
    vendored = proto_fields((SPECS / file).read_text(), message)
    sdk = descriptor_fields(types[installed])
    assert vendored, f"no fields read for {message}"
    for name, (repeated, kind, number) in vendored.items():
        assert name in sdk, f"{message}.{name} is in the published proto but not in the installed SDK"
        sdk_repeated, sdk_kind, sdk_number = sdk[name]
        assert (repeated, number) == (sdk_repeated, sdk_number), name
        assert sdk_kind == kind or sdk_kind.endswith("." + kind), (name, kind, sdk_kind)
