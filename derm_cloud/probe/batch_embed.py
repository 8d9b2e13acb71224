"""Fill a probe's embedding cache from a cloud batch job instead of an online endpoint.

A labelled set is embedded once; an always-on endpoint is billed by the hour whether or not images arrive, a
batch job only while its machines run (plus their start-up). `embed_by_batch` sends the images the cache lacks
(one per distinct content, metadata stripped) to a batch job (`derm_cloud.batch.vertex_embeddings`), and stores
each vector under the same key the online embedder uses (`EmbeddingCache.for_embedder`), so `probe fit` with
that embedder afterwards embeds nothing again: only its one-image check that the endpoint answers like the
cache.

Resumable, nothing lost: the batch image id is the content's SHA-256 (no file name leaves the machine); the job
record (no image bytes, no secrets) sits in `record_dir`, named after the set of images the job embeds, so the
same call after a crash re-attaches to the same job; vectors are committed to the cache before the record marks
their output file read. Images the job failed on, or whose output was malformed, are not cached: the next call
submits a new job for them alone.

Example:
    >>> provider = vertex_embedding_batch(embedder, model_id="456", bucket="my-bucket")  # doctest: +SKIP
    >>> done = embed_by_batch(embedder, provider, readers, names, job_name="dev-embed")  # doctest: +SKIP
    >>> done.embedded_now, done.failures  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from derm_cloud.batch.jobs import BatchImage, BatchProvider, OutputBatch, run_batch
from derm_cloud.data.dataset import Sample
from derm_cloud.embedders.base import Embedder
from derm_cloud.errors import ConfigError, InvalidResponseError
from derm_cloud.images import prepare_payload
from derm_cloud.probe.cache import EmbeddingCache

__all__ = ["BatchEmbedding", "batch_cache_filler", "embed_by_batch"]


@dataclass(frozen=True)
class BatchEmbedding:
    """What `embed_by_batch` did.

    Attributes:
        cache: the cache file filled (the online embedder's).
        job_id: the batch job's id (`None` when every image was cached already: no job).
        record: the job record's path.
        images: images asked for; distinct: their distinct contents.
        embedded_now: vectors the job added to the cache in this call.
        failures: image name -> cause, for images the job did not embed (not cached; embed them again).
        turnaround_s: the job's submit-to-end time as this machine saw it.
    """

    cache: Path
    job_id: str | None
    record: Path | None
    images: int
    distinct: int
    embedded_now: int
    failures: dict[str, str] = field(default_factory=dict)
    turnaround_s: float | None = None


def embed_by_batch(
    embedder: Embedder,
    provider: BatchProvider,
    readers: Sequence[Callable[[], bytes]],
    names: Sequence[str],
    *,
    job_name: str,
    cache_root: Path | None = None,
    record_dir: Path | None = None,
    poll_s: float = 5.0,
    timeout_s: float = 24 * 3600.0,
    raise_on_malformed: bool = True,
) -> BatchEmbedding:
    """Embed, with one batch job, every image `embedder`'s cache lacks, and store the vectors in that cache.

    Args:
        embedder: the online embedder whose cache is filled (its key; nothing is sent to it here).
        provider: the batch job API (`vertex_embedding_batch(embedder, ...)`, or its emulator).
        readers: one callable per image returning its file bytes.
        names: one name per image, for messages (an image id or path; never sent anywhere).
        job_name: the provider job name's prefix (the set's hash is appended: one job per set of images).
        cache_root: embedding cache folder (default: derm-cloud's cache, where `probe fit` looks).
        record_dir: where job records live (default: beside the cache file).
        poll_s, timeout_s: as `run_batch` (a timeout leaves the job running; call again to re-attach).
        raise_on_malformed: raise `InvalidResponseError` when outputs break the model's schema (after storing
            every good vector); `False` reports them in `failures`.

    Raises:
        InvalidResponseError: malformed outputs, naming each image and the output line (good vectors are kept).
        BatchJobFailedError: the job failed as a whole; what it wrote is cached first.
        TimeoutError: still running after `timeout_s`; the record is kept for the next call.
    """
    if len(readers) != len(names):
        raise ValueError(f"{len(readers)} readers but {len(names)} names")
    cache = EmbeddingCache.for_embedder(embedder, cache_root)
    try:
        digests = [hashlib.sha256(read()).hexdigest() for read in readers]
        have = cache.get(digests)
        todo: dict[str, int] = {}  # digest -> first image with that content
        for i, digest in enumerate(digests):
            if digest not in have:
                todo.setdefault(digest, i)
        if not todo:
            return BatchEmbedding(cache.path, None, None, len(readers), len(set(digests)), 0)
        set_hash = hashlib.sha256("\n".join(sorted(todo)).encode()).hexdigest()[:12]
        records = record_dir or cache.path.with_name(cache.path.stem + ".batch-jobs")
        record_path = records / f"{_safe(job_name)}-{set_hash}.json"
        # The provider receives metadata-free bytes (EXIF and GPS stripped), as the online path sends.
        images = [
            BatchImage(digest, *prepare_payload(readers[i](), limits=embedder.image_limits).upload_bytes())
            for digest, i in todo.items()
        ]
        stored: list[int] = [0]
        dimension = embedder.dimension

        def store(found: OutputBatch) -> None:
            nonlocal dimension
            good = []
            for digest, vector in found.predictions.items():
                if digest not in todo:
                    continue
                array = np.asarray(vector, dtype=np.float32)
                if dimension is not None and array.shape[0] != dimension:
                    found.malformed[digest] = f"an embedding of length {array.shape[0]}, expected {dimension}"
                    continue
                dimension = array.shape[0]
                good.append((digest, array))
            for digest in found.malformed:
                found.predictions.pop(digest, None)
            cache.put(good)  # committed before the record marks these outputs read
            stored[0] += len(good)

        result = run_batch(
            provider,
            images,
            record_path=record_path,
            job_name=f"{_safe(job_name)}-{set_hash}",
            poll_s=poll_s,
            timeout_s=timeout_s,
            on_outputs=store,
        )
    finally:
        cache.close()
    by_digest = {digest: names[i] for digest, i in todo.items()}
    failures = {by_digest.get(d, d): cause for d, cause in result.failures.items()}
    malformed = {by_digest.get(d, d): why for d, why in result.malformed.items()}
    if malformed and raise_on_malformed:
        listed = "; ".join(f"image {name}: {why}" for name, why in list(malformed.items())[:5])
        more = f" (and {len(malformed) - 5} more)" if len(malformed) > 5 else ""
        raise InvalidResponseError(
            f"batch job {result.job_id} returned {len(malformed)} malformed embedding(s): {listed}{more}. "
            f"{stored[0]} good vector(s) are cached; check that the job's model serves what "
            f"{embedder.backend_name} expects, then run again to embed the rest",
            backend=embedder.backend_name,
        )
    return BatchEmbedding(
        cache.path,
        result.job_id,
        record_path,
        len(readers),
        len(set(digests)),
        stored[0],
        failures,
        result.turnaround_s,
    )


def _safe(name: str) -> str:
    """A job name as an object-name-safe prefix."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:80] or "embed"


_KNOWN = {"model_id", "bucket", "machine_type", "accelerator_type", "accelerator_count", "service_account", "poll_s"}


def batch_cache_filler(
    embedder: Embedder,
    options: dict[str, Any],
    *,
    job_name: str,
    cache_root: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> Callable[[Sequence[Sample]], None]:
    """What `fit_probe` calls before embedding (`probe fit --embed-via batch`): one Vertex AI batch prediction
    job for the images the cache lacks.

    Args:
        embedder: a `vertex-medsiglip` or `vertex-derm-foundation` embedder (whose cache is filled).
        options: `model_id` (the Model Registry copy of the endpoint's model) and `bucket` (same region), and
            optionally `machine_type`, `accelerator_type`, `accelerator_count`, `service_account`, `poll_s`;
            or `emulate` (an embedder folder or `sklesion`): the job runs on this machine's Vertex batch emulator
            hosting that encoder, the stand-in `derm-cloud emulate vertex-medsiglip` hosts.
        job_name: the batch job name's prefix.
        cache_root: the embedding cache folder `fit_probe` reads (default: derm-cloud's cache).
        say: called with one line of progress at a time.

    Raises:
        ConfigError: an unknown option, or `model_id` / `bucket` missing without `emulate`.
    """
    from derm_cloud.embedders.vertex_endpoint import VertexEndpointEmbedder

    emulate = options.pop("emulate", None)
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise ConfigError(f"unknown --batch-option {unknown}; known: emulate, {', '.join(sorted(_KNOWN))}")
    if not isinstance(embedder, VertexEndpointEmbedder):
        raise ConfigError(
            f"--embed-via batch runs a Vertex AI batch prediction job; embedder {embedder.backend_name!r} has none: "
            "use --embedder vertex-medsiglip or vertex-derm-foundation"
        )
    if not emulate and not (options.get("model_id") and options.get("bucket")):
        raise ConfigError(
            "--embed-via batch needs --batch-option model_id=<Model Registry id> and --batch-option bucket=<bucket> "
            "(or --batch-option emulate=sklesion to run on this machine's emulator)"
        )
    poll_s = float(options.pop("poll_s", 0.2 if emulate else 30.0))
    tell = say or (lambda line: None)

    def fill(samples: Sequence[Sample]) -> None:
        import tempfile

        from derm_cloud.batch.vertex_embeddings import start_emulated_embeddings, vertex_embedding_batch

        emulator, records = None, None
        if emulate:
            from derm_cloud.embedders.local_onnx import resolve_embedder_dir

            emulator, provider = start_emulated_embeddings(embedder, resolve_embedder_dir(str(emulate)))
            # An emulated job ends with this process: its record must not outlive it and point at nothing.
            records = tempfile.TemporaryDirectory(prefix="derm-cloud-embed-jobs-")
            tell("batch job on this machine's Vertex batch emulator (a stand-in encoder, not Google's model)")
        else:
            provider = vertex_embedding_batch(
                embedder, model_id=str(options.pop("model_id")), bucket=str(options.pop("bucket")), **options
            )
        try:
            done = embed_by_batch(
                embedder,
                provider,
                [s.read_bytes for s in samples],
                [s.image_id for s in samples],
                job_name=job_name,
                cache_root=cache_root,
                record_dir=Path(records.name) if records is not None else None,
                poll_s=poll_s,
            )
        finally:
            if emulator is not None:
                emulator.stop()
            if records is not None:
                records.cleanup()
        if done.job_id is None:
            tell(f"batch: all {done.images} images were cached already; no job submitted")
            return
        took = "" if done.turnaround_s is None else f" in {done.turnaround_s:.0f} s"
        tell(f"batch job {done.job_id}: {done.embedded_now} embeddings cached{took} (record {done.record})")
        if done.failures:
            name, cause = next(iter(done.failures.items()))
            tell(
                f"batch: {len(done.failures)} image(s) not embedded by the job (first: {name}: {cause}); "
                "embedding them online"
            )

    return fill
