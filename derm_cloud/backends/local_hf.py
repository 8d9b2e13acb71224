"""`local-hf`: a Hugging Face image-classification model run by the transformers pipeline on this machine.

The model comes from the hub (`model="Anwarkh1/Skin_Cancer-Image_Classification"`, optionally pinned with
`revision=`) or from a local folder written by `save_pretrained` / `huggingface-cli download`. Its labels
(`config.id2label`) are mapped onto the HAM10000 classes when the backend is created, so a generic ImageNet
model fails at once with `UnmappableLabelsError` instead of after the weights have been loaded.

Images reach the pipeline as the RGB `PIL.Image` of `PreparedImage` (EXIF orientation already applied);
nothing leaves the machine except hub downloads of the model files themselves.

The Anwarkh1 model's `preprocessor_config.json` is a renamed model config without `image_mean`/`size`
(docs/reference/dermatology.md section 3.1). For such ViT folders this backend builds the `ViTImageProcessor` defaults
explicitly (224x224 bilinear, x1/255, mean/std 0.5) and says so in `describe().model_facts`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derm_cloud.base import BackendInfo, Classifier, RawResult
from derm_cloud.errors import ConfigError, DermCloudError, MissingDependencyError, ModelSpecError
from derm_cloud.images import DEFAULT_LIMITS, ImageLimits, PreparedImage
from derm_cloud.taxonomy import LabelMap
from derm_cloud.types import PatientMetadata

__all__ = ["HfSource", "LocalHfClassifier", "hf_labels", "load_hf_config", "load_image_processor", "resolve_source"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
DEFAULT_MODEL = "Anwarkh1/Skin_Cancer-Image_Classification"


@dataclass(frozen=True)
class HfSource:
    """Where a model comes from: a local folder, or a hub repo id (plus revision)."""

    ref: str
    folder: Path | None
    revision: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.folder is None

    def __str__(self) -> str:
        if self.folder is not None:
            return str(self.folder)
        return self.ref + (f"@{self.revision}" if self.revision else "")


def resolve_source(model: str | os.PathLike[str], revision: str | None = None) -> HfSource:
    """Decide whether `model` is a local folder or a hub id.

    Raises:
        ModelSpecError: a folder without `config.json`.
        ConfigError: neither an existing folder nor an `owner/name` hub id.
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelSpecError(
                f"{text!r} has no config.json; pass a folder written by save_pretrained (config.json, "
                f"model.safetensors, preprocessor_config.json) or a hub id such as {DEFAULT_MODEL!r}"
            )
        if revision:
            raise ConfigError(f"revision={revision!r} only applies to hub ids; {text!r} is a local folder")
        return HfSource(ref=str(path.resolve()), folder=path.resolve())
    if _HUB_ID.match(text):
        return HfSource(ref=text, folder=None, revision=revision)
    raise ConfigError(f"{text!r} is neither an existing folder nor a Hugging Face hub id like {DEFAULT_MODEL!r}")


@contextmanager
def hub_errors(source: HfSource) -> Iterator[None]:
    """Translate transformers / huggingface_hub loading failures into derm-cloud errors (one place)."""
    try:
        yield
    except DermCloudError:
        raise
    except Exception as exc:
        chain: list[BaseException] = [exc]
        while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
            nxt = chain[-1].__cause__ or chain[-1].__context__
            if nxt is None or nxt in chain:
                break
            chain.append(nxt)
        names = {type(e).__name__ for e in chain}
        text = " ".join(str(e) for e in chain)
        if names & {"RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError"}:
            raise ConfigError(
                f"hub model {source} is not available ({'/'.join(sorted(names))}): check the id and revision, "
                "and for gated or private repos log in with `hf auth login` or pass token="
            ) from exc
        offline = names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled"} or "connect" in text.lower()
        if source.is_hub and offline:
            raise MissingDependencyError(
                f"cannot load {source}: the Hugging Face hub is unreachable (or HF_HUB_OFFLINE=1) and the model "
                "is not in the local cache. Download it on a machine with internet (`hf download "
                f"{source.ref} --local-dir DIR`) and pass model=DIR, or run once online so the cache is filled "
                "and then set HF_HUB_OFFLINE=1"
            ) from exc
        if isinstance(exc, (OSError, ValueError, KeyError)):
            raise ModelSpecError(f"transformers cannot load {source}: {type(exc).__name__}: {exc}") from exc
        raise


def _import_transformers() -> Any:
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            f"the local-hf backend needs transformers and torch ({exc.name} is missing); run: "
            "pip install 'derm-cloud[hf]'"
        ) from exc
    return transformers


def load_hf_config(source: HfSource, *, local_files_only: bool | None = None, token: str | bool | None = None) -> Any:
    """`AutoConfig` of the model (small: the weights are not touched)."""
    transformers = _import_transformers()
    kwargs: dict[str, Any] = {"revision": source.revision, "token": token}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    with hub_errors(source):
        return transformers.AutoConfig.from_pretrained(source.ref, **kwargs)


def hf_labels(config: Any) -> list[str]:
    """`config.id2label` as a list in output order."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    missing = [i for i in range(n) if i not in id2label]
    if missing or not n:
        raise ModelSpecError(f"config.json id2label does not name every output (missing ids {missing[:5]})")
    return [id2label[i] for i in range(n)]


def load_image_processor(
    source: HfSource, config: Any, *, local_files_only: bool | None = None, token: str | bool | None = None
) -> tuple[Any, str | None]:
    """The model's image processor, and a note when class defaults had to be used explicitly.

    Returns:
        `(processor, note)`; `note` is `None` when the folder's own preprocessor config was used.
    """
    from derm_cloud.models.facts import processor_config_problem

    transformers = _import_transformers()
    from transformers.image_processing_base import ImageProcessingMixin

    kwargs: dict[str, Any] = {"revision": source.revision, "token": token}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        with hub_errors(source):
            raw, _ = ImageProcessingMixin.get_image_processor_dict(source.ref, **kwargs)
    except ModelSpecError:
        raw = {}  # no preprocessor_config.json at all
    problem = processor_config_problem(raw)
    if problem is not None and getattr(config, "model_type", None) == "vit":
        side = int(getattr(config, "image_size", 224) or 224)
        # The ViTImageProcessor defaults, spelled out so that they do not depend on a transformers version.
        cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
        processor = cls(
            do_resize=True,
            size={"height": side, "width": side},
            resample=2,  # PIL bilinear
            do_rescale=True,
            rescale_factor=1 / 255,
            do_normalize=True,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        return processor, (
            f"{problem}; using ViTImageProcessor defaults explicitly: resize {side}x{side} bilinear, x1/255, "
            "mean/std 0.5 (as the in21k base model)"
        )
    with hub_errors(source):
        processor = transformers.AutoImageProcessor.from_pretrained(source.ref, **kwargs)
    note = None if problem is None else f"{problem}; using {type(processor).__name__} class defaults: check them"
    return processor, note


def processor_summary(processor: Any) -> dict[str, Any]:
    """The values an image processor applies, JSON-compatible (for facts and the ONNX spec)."""
    size = getattr(processor, "size", None)
    if size is not None and not isinstance(size, dict):
        size = {k: v for k, v in vars(size).items() if v is not None} if hasattr(size, "__dict__") else dict(size)
    out: dict[str, Any] = {"class": type(processor).__name__, "size": size}
    for key in ("do_resize", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor"):
        value = getattr(processor, key, None)
        if value is not None and not isinstance(value, (bool, int, float, str)):
            value = int(value) if key == "resample" else str(value)
        out[key] = value
    for key in ("image_mean", "image_std"):
        value = getattr(processor, key, None)
        out[key] = [float(v) for v in value] if value is not None else None
    return out


class LocalHfClassifier(Classifier):
    """Run a Hugging Face image-classification model with `transformers.pipeline` on this machine.

    Args:
        model: hub id (`"Anwarkh1/Skin_Cancer-Image_Classification"`) or a local folder.
        revision: hub branch, tag or commit to pin (hub ids only).
        device: torch device for the pipeline (`"cpu"`; `"cuda:0"` where available).
        top_k: labels the pipeline returns per image; `None` = all (classes not returned count as 0).
        batch_size: images per forward pass in `predict_batch`.
        label_overrides: `{model_label: canonical_code}` for labels under other names.
        allow_unmapped: accept a generic (ImageNet) model as a latency baseline.
        torch_threads: `torch.set_num_threads` (process-wide) before loading; `None` leaves torch's choice.
        local_files_only: never contact the hub (default: `HF_HUB_OFFLINE`).
        token: hub token for gated/private repos; used for the download only, never stored or logged.

    Raises:
        UnmappableLabelsError: the labels are not the seven lesion classes (before the weights are loaded).
        MissingDependencyError: transformers/torch missing, or the hub is unreachable and the model not cached.
        ConfigError: unknown hub id or revision; a path that does not exist.

    Example:
        >>> clf = derm_cloud.create("local-hf", model="Anwarkh1/Skin_Cancer-Image_Classification")  # doctest: +SKIP
        >>> clf.predict("lesion.jpg").top(3)  # doctest: +SKIP
    """

    backend_name = "local-hf"
    decodes_every_pixel = True

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        device: str | int = "cpu",
        top_k: int | None = None,
        batch_size: int = 8,
        label_overrides: Mapping[str, str] | None = None,
        allow_unmapped: bool = False,
        torch_threads: int | None = None,
        local_files_only: bool | None = None,
        token: str | bool | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
    ) -> None:
        transformers = _import_transformers()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.source = resolve_source(model, revision)
        config = load_hf_config(self.source, local_files_only=local_files_only, token=token)
        labels = hf_labels(config)
        # Mapped before the weights load: an ImageNet model fails in milliseconds, not after a 343 MB download.
        label_map = LabelMap.for_labels(labels, overrides=label_overrides, allow_unmapped=allow_unmapped)
        if top_k is not None and not 1 <= top_k <= len(labels):
            raise ConfigError(f"top_k must be between 1 and {len(labels)} (or None for all), got {top_k}")
        model_id = self.source.ref if self.source.is_hub else Path(self.source.ref).name
        super().__init__(label_map=label_map, model_id=model_id, image_limits=image_limits)
        if torch_threads is not None:
            import torch

            torch.set_num_threads(int(torch_threads))
        processor, self.preprocessing_note = load_image_processor(
            self.source, config, local_files_only=local_files_only, token=token
        )
        hub_kwargs: dict[str, Any] = {"revision": self.source.revision, "token": token}
        if local_files_only is not None:
            hub_kwargs["local_files_only"] = local_files_only
        start = time.perf_counter()
        with hub_errors(self.source):
            # Loaded here rather than by pipeline(model=id): pipeline() does not accept local_files_only.
            weights = transformers.AutoModelForImageClassification.from_pretrained(self.source.ref, **hub_kwargs)
            self.pipeline = transformers.pipeline(
                "image-classification", model=weights, image_processor=processor, device=device
            )
        self.load_seconds = time.perf_counter() - start
        self.labels = labels
        self.top_k = len(labels) if top_k is None else top_k
        self.batch_size = batch_size
        self.device = str(device)
        self._facts = self._model_facts(config, processor)

    def _model_facts(self, config: Any, processor: Any) -> dict[str, Any]:
        from derm_cloud.models.facts import known_facts, parse_model_card

        facts: dict[str, Any] = {
            "architecture": (getattr(config, "architectures", None) or [type(self.pipeline.model).__name__])[0],
            "model_type": getattr(config, "model_type", None),
            "parameters": int(sum(p.numel() for p in self.pipeline.model.parameters())),
            "labels": list(self.labels),
            "source": str(self.source),
            "preprocessing": processor_summary(processor),
            "device": self.device,
            "load_seconds": round(self.load_seconds, 3),
        }
        if self.preprocessing_note:
            facts["preprocessing_note"] = self.preprocessing_note
        card = self.source.folder / "README.md" if self.source.folder is not None else None
        if card is not None and card.is_file():
            facts.update(parse_model_card(card.read_text(encoding="utf-8")))
        entry = known_facts(self.source.ref, self.model_id)
        if entry is not None:
            for key in ("licence", "training_data", "intended_use", "known_limitations"):
                facts.setdefault(key, entry[key])
            facts["reference"] = entry["source"]
        return facts

    def _predict_one(self, image: PreparedImage, metadata: PatientMetadata, timeout: float | None) -> RawResult:
        return self._run([image])[0]

    def _predict_many(
        self, images: Sequence[PreparedImage], metadata: Sequence[PatientMetadata]
    ) -> list[tuple[RawResult, int, float]]:
        start = time.perf_counter()
        raws = self._run(images)
        per_image_ms = (time.perf_counter() - start) * 1000 / max(1, len(images))
        return [(raw, 1, per_image_ms) for raw in raws]

    def _run(self, images: Sequence[PreparedImage]) -> list[RawResult]:
        # Image-only model: patient metadata is not an input, so it is ignored (and reported as unused).
        outputs = self.pipeline(
            [im.image for im in images], top_k=self.top_k, batch_size=min(self.batch_size, len(images))
        )
        extra: dict[str, Any] = {"used_metadata": False}
        if len(images) > 1:
            extra["batch_size"] = len(images)
        return [
            RawResult(scores=[(str(o["label"]), float(o["score"])) for o in out], extra=dict(extra)) for out in outputs
        ]

    def describe(self) -> BackendInfo:
        return BackendInfo(
            backend=self.backend_name,
            provider="local",
            service=f"transformers pipeline on this machine ({self.device})",
            model_id=self.model_id,
            endpoint=None,
            data_leaves_machine=False,
            stores_images=False,
            labels_mapped=self.label_map.mapped,
            billing={"sku": "local.cpu" if self.device.startswith("cpu") else "local.gpu"},
            model_facts=dict(self._facts),
        )

    def _close(self) -> None:
        del self.pipeline
