"""Embeddings through Vertex AI batch prediction jobs (`derm_cloud.batch.vertex_embeddings`, `probe.batch_embed`).

One emulated MedSigLIP model, online (endpoint) and batch (job), hosting the same tiny encoder: the instances
follow the HAI-DEF notebooks' batch shape; batch and online vectors of real dev images agree; the vectors fill the
online embedder's cache so embedding again sends nothing; a killed client resumes without a second job; refused
and malformed outputs are typed and name the image; `probe fit --embed-via batch` runs end to end.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from derm_cloud.batch.vertex_embeddings import HaiDefInstances, start_emulated_embeddings
from derm_cloud.embedders.vertex_endpoint import VertexEndpointEmbedder
from derm_cloud.errors import ConfigError, InvalidResponseError
from derm_cloud.probe.batch_embed import embed_by_batch
from derm_cloud.probe.cache import EmbeddingCache
from derm_cloud.testing.emulators.vertex_embeddings import VertexEmbeddingEmulator, vertex_embedder_for
from derm_cloud.testing.tiny_embedders import TINY_EMBEDDER_DIMENSION, build_tiny_embedder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _png(seed: int, size: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _readers(blobs: list[bytes]) -> list[Any]:
    return [lambda b=b: b for b in blobs]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("enc") / "tiny-embedder")


@pytest.fixture(scope="module")
def online(encoder_dir: Path) -> Iterator[VertexEmbeddingEmulator]:
    with VertexEmbeddingEmulator(encoder_dir, serving_api="medsiglip") as emu:
        yield emu  # type: ignore[misc]


@pytest.fixture(scope="module")
def embedder(online: VertexEmbeddingEmulator) -> Iterator[VertexEndpointEmbedder]:
    # The declared dimension keeps the cache key the same before and after the endpoint's first answer.
    with vertex_embedder_for(online, dimension=TINY_EMBEDDER_DIMENSION) as emb:
        yield emb  # type: ignore[misc]


@pytest.fixture(scope="module")
def batch(embedder: VertexEndpointEmbedder, encoder_dir: Path) -> Iterator[tuple[Any, Any]]:
    emulator, provider = start_emulated_embeddings(embedder, encoder_dir, shard_size=3)
    try:
        yield emulator, provider
    finally:
        emulator.stop()


def test_batch_and_online_embeddings_of_real_dev_images_agree(
    embedder: VertexEndpointEmbedder, batch: tuple[Any, Any], dev_images: list[Path], tmp_path: Path
) -> None:
    emulator, provider = batch
    paths = dev_images[:4]
    blobs = [p.read_bytes() for p in paths]
    done = embed_by_batch(
        embedder, provider, _readers(blobs), [p.stem for p in paths], job_name="dev", cache_root=tmp_path, poll_s=0.05
    )
    assert done.embedded_now == 4 and not done.failures and done.job_id
    online = np.stack([e.vector for e in embedder.embed_batch(blobs)])
    cache = EmbeddingCache.for_embedder(embedder, tmp_path)
    try:
        vectors, _, embedded_now = cache.embed_all(embedder, _readers(blobs))
    finally:
        cache.close()
    assert embedded_now == 0  # the fit afterwards embeds nothing: the batch job filled the same cache key
    assert float(np.max(np.abs(vectors - online))) <= 1e-6
    # The instances file holds the notebook's MedSigLIP batch shape: a gs:// link read with the job's account.
    lines = [
        json.loads(line)
        for (_, name), data in emulator.gcs.objects.items()
        if name.endswith("instances.jsonl")
        for line in data.decode().splitlines()
    ]
    assert lines and all(set(line) == {"image"} for line in lines)
    assert all(line["image"]["access_credential"] == "application_default" for line in lines)
    assert all(line["image"]["gcs_uri"].startswith("gs://derm-cloud-embed/") for line in lines)
    names = [name.rpartition("/")[2] for (_, name) in emulator.gcs.objects if "/output/" in name]
    assert sorted(names) == ["prediction.results-00000-of-00002", "prediction.results-00001-of-00002"]


def test_a_killed_client_resumes_the_same_job_and_a_full_cache_submits_nothing(
    embedder: VertexEndpointEmbedder, batch: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator, provider = batch
    blobs = [_png(i) for i in range(5)] + [_png(0)]  # the last one repeats the first's content: embedded once
    names = [f"img{i}" for i in range(6)]

    class ClientKilledError(Exception):
        pass

    def die(record: Any) -> None:
        raise ClientKilledError

    before = emulator.batch.submissions
    import derm_cloud.probe.batch_embed as module

    original = module.run_batch
    with monkeypatch.context() as patch:
        patch.setattr(module, "run_batch", lambda *a, **k: original(*a, **k, on_record=die))
        with pytest.raises(ClientKilledError):
            embed_by_batch(embedder, provider, _readers(blobs), names, job_name="k", cache_root=tmp_path, poll_s=0.05)
    done = embed_by_batch(embedder, provider, _readers(blobs), names, job_name="k", cache_root=tmp_path, poll_s=0.05)
    assert emulator.batch.submissions == before + 1  # re-attached by the record, not submitted again
    assert done.embedded_now == 5 and done.distinct == 5 and not done.failures
    again = embed_by_batch(embedder, provider, _readers(blobs), names, job_name="k", cache_root=tmp_path, poll_s=0.05)
    assert again.job_id is None and again.embedded_now == 0
    assert emulator.batch.submissions == before + 1
    text = done.record.read_text() if done.record else ""
    assert "img0" not in text and "access_credential" not in text  # no names, no tokens in the record


def test_an_anonymous_read_is_refused_per_image_with_the_fix(
    embedder: VertexEndpointEmbedder, batch: tuple[Any, Any], tmp_path: Path
) -> None:
    _, provider = batch
    anonymous = HaiDefInstances("medsiglip", backend="vertex-medsiglip", access_credential=None)
    provider.instances, kept = anonymous, provider.instances
    try:
        done = embed_by_batch(
            embedder, provider, _readers([_png(40)]), ["lesion-40"], job_name="anon", cache_root=tmp_path, poll_s=0.05
        )
    finally:
        provider.instances = kept
    assert done.embedded_now == 0
    assert list(done.failures) == ["lesion-40"]
    assert "application_default" in done.failures["lesion-40"]


def test_a_malformed_output_is_a_typed_error_naming_the_image_and_keeps_the_rest(
    embedder: VertexEndpointEmbedder, batch: tuple[Any, Any], tmp_path: Path
) -> None:
    emulator, provider = batch
    container = next(iter(emulator.embedding_models.values()))
    answer = container.container_answers
    blobs = [_png(50), _png(51)]
    bad_uri_part = hashlib.sha256(blobs[1]).hexdigest()

    def truncated(endpoint_id: str, instances: list[Any]) -> list[dict[str, Any]]:
        out = answer(endpoint_id, instances)
        if bad_uri_part in json.dumps(instances):
            out[0].pop("model_temperature")
        return out

    container.container_answers = truncated
    try:
        with pytest.raises(InvalidResponseError, match=r"image lesion-51: .*model_temperature"):
            embed_by_batch(
                embedder,
                provider,
                _readers(blobs),
                ["lesion-50", "lesion-51"],
                job_name="m",
                cache_root=tmp_path,
                poll_s=0.05,
            )
    finally:
        container.container_answers = answer
    cache = EmbeddingCache.for_embedder(embedder, tmp_path)
    try:
        digests = [hashlib.sha256(b).hexdigest() for b in blobs]
        assert list(cache.get(digests)) == [digests[0]]  # the good vector was kept
    finally:
        cache.close()
    # Run again: one new job for the missing image alone, which now answers well.
    done = embed_by_batch(
        embedder, provider, _readers(blobs), ["lesion-50", "lesion-51"], job_name="m", cache_root=tmp_path, poll_s=0.05
    )
    assert done.embedded_now == 1 and not done.failures


def test_a_non_vertex_embedder_has_no_batch_path(encoder_dir: Path) -> None:
    from derm_cloud.embedders.local_onnx import LocalOnnxEmbedder

    with LocalOnnxEmbedder(encoder_dir) as local, pytest.raises(ConfigError, match="vertex-medsiglip"):
        start_emulated_embeddings(local, encoder_dir)  # type: ignore[arg-type]


def test_probe_fit_embed_via_batch_from_the_command_line(
    online: VertexEmbeddingEmulator,
    encoder_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from derm_cloud.cli import main
    from derm_cloud.taxonomy import CLASS_CODES

    rows = ["image_id,lesion_id,dx,file"]
    for k, code in enumerate(CLASS_CODES):
        for lesion in range(6):
            colour = np.asarray([(k * 37) % 255, (k * 91) % 255, (k * 53) % 255])
            noise = np.random.default_rng(k * 10 + lesion).normal(0, 20, (24, 24, 3))
            Image.fromarray(np.clip(colour + noise, 0, 255).astype(np.uint8)).save(tmp_path / f"{code}{lesion}.png")
            rows.append(f"{code}{lesion},L{code}{lesion},{code},{code}{lesion}.png")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setenv("DERM_CLOUD_CACHE", str(tmp_path / "cache"))
    endpoint = ["--embedder", "vertex-medsiglip", "--embedder-option", "endpoint_id=2345678901"]
    endpoint += ["--embedder-option", "project=derm-cloud-test", "--embedder-option", f"api_endpoint={online.url}"]
    common = ["probe", "fit", "--dataset", str(tmp_path / "labels.csv"), "--folds", "2", "--sizes", "14", *endpoint]
    assert main([*common, "--out", str(tmp_path / "p0"), "--embed-via", "batch"]) != 0
    assert "needs --batch-option model_id=<Model Registry id>" in capsys.readouterr().err
    assert not (tmp_path / "p0").exists()
    before = len(online.requests)
    rc = main(
        [*common, "--out", str(tmp_path / "p1"), "--embed-via", "batch", "--batch-option", f"emulate={encoder_dir}"]
    )
    out, err = capsys.readouterr()
    assert rc == 0 and "42 embeddings cached" in err and "0 images embedded in this run" in out
    predicts = [r for r in online.requests[before:] if r.method == "POST"]
    assert len(predicts) == 1  # the cache's one-image check that the endpoint answers like the cached vectors
    spec = json.loads((tmp_path / "p1" / "probe.json").read_text())
    assert spec["embedder"]["name"] == "vertex-medsiglip" and spec["data"]["images"] == 42


def test_instance_shapes_and_one_malformed_line_does_not_block_its_file() -> None:
    from derm_cloud.batch.jobs import JobRecord
    from derm_cloud.batch.vertex import VertexBatchPrediction
    from derm_cloud.errors import InvalidImageError

    derm = HaiDefInstances("derm-foundation")
    assert derm.instance("gs://b/x.png", "image/png") == {"gcs_uri": "gs://b/x.png"}  # the job's account reads it
    assert derm.read({"embedding": [[1, 2], [3]]}) == [1.0, 2.0, 3.0]  # flattened, as Google's notebook does
    with pytest.raises(InvalidImageError, match="Failed to retrieve"):
        derm.read({"error": {"description": "Failed to get prediction for instance. Reason: Failed to retrieve"}})

    class Blob:
        def __init__(self, name: str, lines: list[dict[str, Any]]) -> None:
            self.name, self.data = name, "".join(json.dumps(line) + "\n" for line in lines).encode()

        def download_as_bytes(self) -> bytes:
            return self.data

    good = {"displayNames": ["mel", "nv"], "confidences": [0.25, 0.75]}
    blobs = [
        Blob("out/predictions_00001.jsonl", [{"instance": {"content": "gs://b/in/a"}, "prediction": good}]),
        Blob("out/predictions_00002.jsonl", [{"instance": {"content": "gs://b/in/c"}, "prediction": {"ids": []}}]),
    ]
    storage = type("Storage", (), {"list_blobs": lambda self, bucket, prefix: blobs})()
    provider = VertexBatchPrediction(
        None, storage, project="p", location="l", model_id="m", bucket="b", labels=["nv", "mel"]
    )
    record = JobRecord(
        "vertex", "j", "", "", {"gs://b/in/a": "a", "gs://b/in/c": "c"}, extra={"output_directory": "gs://b/out"}
    )
    found = provider.read_outputs(record)
    assert found.predictions == {"a": [0.75, 0.25]}
    assert list(found.malformed) == ["c"] and "predictions_00002.jsonl:1" in found.malformed["c"]
    assert found.objects == ["out/predictions_00001.jsonl", "out/predictions_00002.jsonl"]


def test_derm_foundation_batch_vectors_equal_its_online_ones(
    online: VertexEmbeddingEmulator, batch: tuple[Any, Any], encoder_dir: Path, tmp_path: Path
) -> None:
    from derm_cloud.batch.vertex_embeddings import vertex_embedding_batch

    emulator, _ = batch
    online.add_embedding_endpoint("3456789012", encoder_dir, serving_api="derm-foundation")
    emulator.add_embedding_model("7100000002", encoder_dir, serving_api="derm-foundation")
    blobs = [_png(60), _png(61)]
    with vertex_embedder_for(online, endpoint_id="3456789012", dimension=TINY_EMBEDDER_DIMENSION) as derm:
        provider = vertex_embedding_batch(
            derm,
            model_id="7100000002",
            bucket="derm-cloud-embed",
            job_client=emulator.job_client(),
            storage_client=emulator.storage_client(),
        )
        assert provider.machine_type == "n1-standard-8" and provider.accelerator_type is None
        done = embed_by_batch(
            derm, provider, _readers(blobs), ["a", "b"], job_name="df", cache_root=tmp_path, poll_s=0.05
        )
        assert done.embedded_now == 2 and not done.failures
        cache = EmbeddingCache.for_embedder(derm, tmp_path)
        try:
            vectors, _, embedded_now = cache.embed_all(derm, _readers(blobs))
        finally:
            cache.close()
        assert embedded_now == 0
        online_vectors = np.stack([e.vector for e in derm.embed_batch(blobs)])
    assert float(np.max(np.abs(vectors - online_vectors))) <= 1e-6


def test_no_google_credentials_is_a_typed_error_naming_the_fix(
    embedder: VertexEndpointEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from derm_cloud.batch.vertex_embeddings import vertex_embedding_batch
    from derm_cloud.errors import AuthenticationError

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login here
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # and no metadata server to ask
    with pytest.raises(AuthenticationError, match="gcloud auth application-default login"):
        vertex_embedding_batch(embedder, model_id="456", bucket="my-bucket")


def test_a_client_killed_after_reading_keeps_the_vectors_it_read(
    embedder: VertexEndpointEmbedder, batch: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from derm_cloud.batch.jobs import JobRecord

    emulator, provider = batch
    blobs = [_png(70), _png(71), _png(72), _png(73)]
    save = JobRecord.save

    def die_when_marking_outputs_read(self: JobRecord, path: Any) -> None:
        if self.collected:
            raise KeyboardInterrupt  # the client dies between reading the outputs and recording them read
        save(self, path)

    with monkeypatch.context() as patch:
        patch.setattr(JobRecord, "save", die_when_marking_outputs_read)
        with pytest.raises(KeyboardInterrupt):
            embed_by_batch(
                embedder, provider, _readers(blobs), list("abcd"), job_name="r", cache_root=tmp_path, poll_s=0.05
            )
    cache = EmbeddingCache.for_embedder(embedder, tmp_path)
    try:
        assert len(cache.get([hashlib.sha256(b).hexdigest() for b in blobs])) == 4  # stored before the record
    finally:
        cache.close()
    submissions = emulator.batch.submissions
    again = embed_by_batch(embedder, provider, _readers(blobs), list("abcd"), job_name="r", cache_root=tmp_path)
    assert again.job_id is None and emulator.batch.submissions == submissions
