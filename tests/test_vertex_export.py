"""Vertex AI ``ExportModel`` round trip: model id in, export through the real SDKs, a local model folder out.

The export is requested with ``aiplatform_v1.ModelServiceClient`` (REST) against the ModelService emulator,
polled as a long-running operation, and downloaded with ``google-cloud-storage`` from the emulator's Cloud Storage
routes; the files are the AutoML Edge TFLite stand-in built at test time (derm_cloud.testing.service_exports).
The "cloud" side is the Vertex prediction emulator serving the same folder.
Images: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), read from shared/data, never copied.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import derm_cloud
from derm_cloud.errors import AuthenticationError, ConfigError, DeadlineExceededError, NotFoundError, ServiceError
from derm_cloud.models.imports import import_model
from derm_cloud.models.imports.cloud import export_vertex_model
from derm_cloud.testing.emulators.base import Fault
from derm_cloud.testing.emulators.vertex import VertexEmulator, vertex_backend_for
from derm_cloud.testing.emulators.vertex_model_service import VertexModelServiceEmulator
from derm_cloud.testing.service_exports import build_vertex_edge_export

DESTINATION = "gs://derm-exports/edge"


def _export(emu: VertexModelServiceEmulator, out_dir: Path, **options: object) -> tuple[Path, str]:
    options.setdefault("storage_client", emu.storage_client())
    return export_vertex_model(  # type: ignore[arg-type]
        str(options.pop("model", emu.model_id)),
        project=emu.project,
        location=emu.location,
        destination=str(options.pop("destination", DESTINATION)),
        out_dir=out_dir,
        api_endpoint=emu.url,
        poll_seconds=0.01,
        **options,
    )


def test_model_id_in_local_tflite_out_matching_the_vertex_endpoint(tmp_path: Path, dev_images: list[Path]) -> None:
    with VertexModelServiceEmulator(polls_until_done=3) as emu:
        folder, uri = _export(emu, tmp_path / "download")  # no credentials: anonymous for a loopback endpoint
        export_posts = [r for r in emu.requests if r.method == "POST"]
        polls = emu.requests_to("/operations/")
        downloads = [r for r in emu.requests if "alt=media" in r.path]
    # Vertex's layout: <destination>/model-<id>/<format>/<timestamp>/, the files straight under it.
    assert uri == f"{DESTINATION}/model-{emu.model_id}/tflite/{emu.timestamp}"
    assert sorted(name for _, name in emu.objects) == [
        f"edge/model-{emu.model_id}/tflite/{emu.timestamp}/dict.txt",
        f"edge/model-{emu.model_id}/tflite/{emu.timestamp}/model.tflite",
    ]
    body = export_posts[0].json()["outputConfig"]
    assert body == {"exportFormatId": "tflite", "artifactDestination": {"outputUriPrefix": DESTINATION}}
    assert len(polls) == 4 and len(downloads) == 2  # 3 answered "not done", the 4th done; 2 files fetched
    # What arrived is byte for byte what the exporter wrote (an independent build with the same seed).
    reference = build_vertex_edge_export(tmp_path / "reference")
    for name in ("model.tflite", "dict.txt"):
        assert (folder / name).read_bytes() == (reference / name).read_bytes()

    result = import_model(folder, tmp_path / "home", provenance={"model": emu.model_id, "artifact_uri": uri})
    provenance = result.spec.facts["provenance"]
    assert provenance["service"] == "vertex-ai-automl-edge" and provenance["artifact_uri"] == uri
    assert result.layout == "vertex-automl-edge-tflite" and result.spec.model_id == f"vertex-edge:{emu.model_id}"
    with (
        VertexEmulator(
            result.model_dir
        ) as cloud_emu,  # the endpoint serves the imported folder, as in test_tflite_imports
        vertex_backend_for(cloud_emu) as cloud,
        derm_cloud.create("local-tflite", model_dir=result.model_dir) as home,
    ):
        gaps = []
        for path in dev_images:
            ours, theirs = home.predict(path), cloud.predict(path)
            assert ours.top(1)[0].label == theirs.top(1)[0].label
            gaps.append(max(abs(ours.probabilities[c] - theirs.probabilities[c]) for c in ours.probabilities))
    assert max(gaps) < 1e-6, gaps


def test_a_wrong_model_id_is_a_not_found_error_naming_the_fix(tmp_path: Path) -> None:
    with VertexModelServiceEmulator() as emu, pytest.raises(NotFoundError, match="no model .*check the id") as info:
        _export(emu, tmp_path, model="999")
    assert info.value.status == 404 and not emu.operations


def test_a_format_the_model_does_not_offer_is_refused_before_exporting(tmp_path: Path) -> None:
    with VertexModelServiceEmulator(export_formats=("tf-saved-model",)) as emu:
        with pytest.raises(ConfigError, match=r"cannot be exported as 'tflite'; it offers \['tf-saved-model'\]"):
            _export(emu, tmp_path)
        assert not emu.operations and not list(tmp_path.iterdir())


def test_failed_slow_and_unauthorised_exports_give_typed_errors(tmp_path: Path) -> None:
    failed = "could not export .*Internal error"
    with VertexModelServiceEmulator(export_error="Internal error.") as emu, pytest.raises(ServiceError, match=failed):
        _export(emu, tmp_path / "failed")
    slow = "did not finish within 0.2 s; its operation .*operations/"
    with VertexModelServiceEmulator(polls_until_done=10_000) as emu, pytest.raises(DeadlineExceededError, match=slow):
        _export(emu, tmp_path / "slow", timeout=0.2)
    from google.oauth2.credentials import Credentials

    with VertexModelServiceEmulator(access_token="the-right-token") as emu:
        # Anonymous: 401, the SDK tries to refresh what cannot be refreshed; the fix is to log in.
        with pytest.raises(AuthenticationError, match="no usable Google credentials .*application-default login"):
            _export(emu, tmp_path / "anonymous")
        # A token that is not allowed: 403 PERMISSION_DENIED.
        with pytest.raises(AuthenticationError, match="refused the credentials .*Permission") as info:
            _export(emu, tmp_path / "denied", credentials=Credentials(token="a-wrong-token"))
        assert info.value.status == 403 and "a-wrong-token" not in str(info.value)
    with VertexModelServiceEmulator() as emu, pytest.raises(ConfigError, match="gs://BUCKET/PREFIX"):
        _export(emu, tmp_path / "dest", destination="s3://not-gcs")


def test_a_bucket_the_caller_may_not_read_is_an_authentication_error(tmp_path: Path) -> None:
    with VertexModelServiceEmulator() as emu:
        emu.inject(Fault("error", status=403, path_contains="/storage/v1/b/derm-exports/o?"))
        with pytest.raises(AuthenticationError, match="Cloud Storage refused reading gs://derm-exports/.*objectViewer"):
            _export(emu, tmp_path / "download")
        assert len(emu.operations) == 1 and not list((tmp_path / "download").iterdir())


def test_cli_exports_downloads_and_imports_a_vertex_model(tmp_path: Path) -> None:
    with VertexModelServiceEmulator() as emu:
        # The storage client finds the emulator the way Google documents: STORAGE_EMULATOR_HOST.
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "STORAGE_EMULATOR_HOST": emu.url}
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "derm_cloud.cli",
                "models",
                "import",
                "--vertex-model",
                emu.model_id,
                "--project",
                emu.project,
                "--location",
                emu.location,
                "--destination",
                DESTINATION,
                "--endpoint",
                emu.url,
                "--out",
                str(tmp_path / "home"),
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=300,
        )
    assert run.returncode == 0, run.stderr
    row = json.loads(run.stdout)
    assert row["layout"] == "vertex-automl-edge-tflite" and row["model_id"] == f"vertex-edge:{emu.model_id}"
    provenance = row["provenance"]
    assert provenance["service"] == "vertex-ai-automl-edge" and provenance["export_format"] == "tflite"
    assert provenance["artifact_uri"] == f"{DESTINATION}/model-{emu.model_id}/tflite/{emu.timestamp}"
    assert provenance["project"] == emu.project and provenance["location"] == emu.location
    assert (tmp_path / "home" / "model.tflite").is_file()


def test_cli_vertex_import_names_the_missing_flags(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run(
        [sys.executable, "-m", "derm_cloud.cli", "models", "import", "--vertex-model", "123", "--project", "p"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode != 0
    assert "--vertex-model needs --location, --destination" in run.stderr and "Traceback" not in run.stderr
