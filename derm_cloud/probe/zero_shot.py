"""`derm-cloud probe zero-shot`: embed the prompts once, optionally measure on a labelled set, write the folder.

The folder (`zero_shot.json` + `text_embeddings.npz`, read by `derm_cloud.backends.zero_shot.ZeroShotClassifier`)
records the embedder (registry name, options without keys or an emulator's address, model id, dimension, and
`"emulated": true` when written through an emulator), the prompts and their version, the temperature and where it
came from, and the prompt embeddings with their fingerprint. Nothing is fitted: with a labelled dataset every image
is a test image, so its figures (balanced accuracy and melanoma sensitivity with 95% lesion-bootstrap intervals)
are the "no labels" point of a learning curve. Image embeddings go through the same cache as `probe fit`'s, so a
zero-shot run and a probe fit on the same images embed each image once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from derm_cloud.backends.recorded_embedder import recordable_options
from derm_cloud.backends.zero_shot import (
    SPEC_FILE,
    UNCALIBRATED_NOTE,
    VECTORS_FILE,
    ZERO_SHOT_FORMAT,
    embed_prompts,
    zero_shot_probabilities,
)
from derm_cloud.backends.zero_shot_prompts import PromptSet, load_prompts
from derm_cloud.data.dataset import Dataset
from derm_cloud.embedders.base import Embedder
from derm_cloud.errors import ConfigError
from derm_cloud.probe.cache import EmbeddingCache
from derm_cloud.probe.folds import figures

__all__ = ["ZeroShotRun", "write_zero_shot"]


@dataclass(frozen=True)
class ZeroShotRun:
    """What `write_zero_shot` wrote and measured."""

    folder: Path
    spec: dict[str, Any]
    embedded_now: int


def write_zero_shot(
    embedder: Embedder,
    out_dir: str | Path,
    *,
    embedder_name: str,
    embedder_options: Mapping[str, Any] | None = None,
    prompts: str | Path | Mapping[str, Sequence[str]] | PromptSet | None = None,
    temperature: float | None = None,
    dataset: Dataset | None = None,
    cache_root: Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ZeroShotRun:
    """Embed the prompts, measure on `dataset` when given, write the zero-shot folder.

    Raises:
        CapabilityError: the embedder embeds images only.
        ConfigError: a prompt set missing a class, unlabelled images, `out_dir` exists without `overwrite`.
    """
    say = progress or (lambda line: None)
    out = Path(out_dir).expanduser()
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    prompt_set = load_prompts(prompts)
    texts = embed_prompts(embedder, prompt_set, temperature=temperature)
    say(
        f"embedded {len(prompt_set.flat)} prompts ({prompt_set.version}); temperature {texts.temperature:.4g} from "
        f"{texts.temperature_source}"
    )
    info = embedder.describe()
    facts = info.model_facts
    spec: dict[str, Any] = {
        "format": ZERO_SHOT_FORMAT,
        "model_id": f"zero-shot:{embedder.model_id}:{texts.fingerprint[:8]}",
        "embedder": {
            "name": embedder_name,
            # No key is ever written; an emulator's address dies with it: the endpoint's identity is kept, not its port.
            "options": recordable_options(embedder_options or {}),
            "model_id": embedder.model_id,
            "dimension": embedder.dimension,
        }
        | ({"emulated": True} if info.emulated else {}),
        "prompts": prompt_set.to_dict(),
        "prompts_version": prompt_set.version,
        "prompts_sha256": prompt_set.fingerprint,
        "temperature": {"value": texts.temperature, "source": texts.temperature_source},
        "text_embeddings": {"file": VECTORS_FILE, "prompts": len(prompt_set.flat), "fingerprint": texts.fingerprint},
        "facts": {
            "calibration": UNCALIBRATED_NOTE,
            "intended_use": "Research comparison of skin-lesion classifiers (triage support, never a diagnosis; a "
            "clinician reviews every result).",
        }
        | {key: facts[key] for key in ("stand_in", "text_embeddings") if key in facts},
    }
    embedded = 0
    if dataset is not None:
        spec["measured"], embedded = _measure(embedder, texts, dataset, cache_root, say)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    np.savez(staging / VECTORS_FILE, prompt_vectors=texts.prompt_vectors.astype(np.float32))
    (staging / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    staging.replace(out)
    return ZeroShotRun(out, spec, embedded)


def _measure(
    embedder: Embedder, texts: Any, dataset: Dataset, cache_root: Path | None, say: Callable[[str], None]
) -> tuple[dict[str, Any], int]:
    samples = list(dataset.samples)
    unlabelled = [s.image_id for s in samples if s.label is None]
    if unlabelled:
        raise ConfigError(
            f"{len(unlabelled)} image(s) of {dataset.name} have no label (first: {unlabelled[0]}); measuring needs a "
            "manifest with a dx/label column (or leave --dataset out: writing the folder needs no labels)"
        )
    cache = EmbeddingCache.for_embedder(embedder, cache_root)
    try:
        x, _digests, embedded = cache.embed_all(
            embedder,
            [s.read_bytes for s in samples],
            progress=lambda done, total: say(f"embedded {done}/{total} images not cached yet"),
        )
    finally:
        cache.close()
    probs, _cosine = zero_shot_probabilities(x, texts)
    y = np.asarray([s.label for s in samples])
    groups = [s.lesion_id or s.image_id for s in samples]
    measured = figures(probs, y, groups) | {"source": dataset.name, "labelled_images_used": 0}
    say(f"balanced accuracy {measured['balanced_accuracy']} {measured['balanced_accuracy_ci']} on {len(y)} images")
    return measured, embedded
