"""`derm-cloud probe fit`: embed a labelled dataset (cached, resumable), measure and fit a head, write the folder.

The folder (`probe.json` + `head.npz`, read by `derm_cloud.backends.probe.ProbeClassifier`) records the
embedder (registry name, options, model id, dimension), a hash of the labelled data (content digests and
labels, so two fits on the same images and labels have the same hash whatever the file names), the
out-of-fold figures and the learning curve (`derm_cloud.probe.folds`).

With `holdout`, a lesion-disjoint share of the data is set aside before anything is fitted or measured and
written as `holdout.csv` (paths and labels, never image bytes): compare the probe on it, not on images its head
was trained on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from derm_cloud.backends.probe import PROBE_FORMAT
from derm_cloud.backends.recorded_embedder import recordable_options
from derm_cloud.data.dataset import Dataset, Sample
from derm_cloud.embedders.base import Embedder
from derm_cloud.errors import ConfigError
from derm_cloud.probe.cache import EmbeddingCache
from derm_cloud.probe.folds import LEARNING_CURVE_SIZES, cross_validate, figures, learning_curve
from derm_cloud.probe.heads import fit_head, lesion_folds

__all__ = ["ProbeFit", "fit_probe"]


@dataclass(frozen=True)
class ProbeFit:
    """What `fit_probe` wrote and measured."""

    folder: Path
    spec: dict[str, Any]
    embedded_now: int
    holdout: Path | None


def _labelled(dataset: Dataset) -> list[Sample]:
    unlabelled = [s.image_id for s in dataset.samples if s.label is None]
    if unlabelled:
        raise ConfigError(
            f"{len(unlabelled)} image(s) of {dataset.name} have no label (first: {unlabelled[0]}); a probe is trained "
            "on labelled images: give a manifest with a dx/label column"
        )
    return list(dataset.samples)


def _split_holdout(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    if not 0 < fraction < 0.9:
        raise ConfigError(f"holdout must be a fraction between 0 and 0.9, got {fraction}")
    y = np.asarray([s.label for s in samples])
    groups = [s.lesion_id or s.image_id for s in samples]
    splits = max(2, round(1 / fraction))
    _, test = lesion_folds(y, groups, splits, seed + 1)[0]
    held = set(test.tolist())
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]


def _write_manifest(samples: Sequence[Sample], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["image_id", "lesion_id", "dx", "age", "sex", "localization", "file"])
        for s in samples:
            if not isinstance(s.source, (str, Path)) or str(s.source).startswith(("http://", "https://")):
                raise ConfigError(f"holdout needs images on this machine; {s.image_id} is read from {s.source!r}")
            meta = s.metadata
            age = "" if meta.age is None else meta.age
            row = [s.image_id, s.lesion_id or "", s.label, age, meta.sex, meta.site or "", Path(s.source).resolve()]
            out.writerow(row)


def fit_probe(
    dataset: Dataset,
    embedder: Embedder,
    out_dir: str | Path,
    *,
    embedder_name: str,
    embedder_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    outer_splits: int = 5,
    sizes: Sequence[int] = LEARNING_CURVE_SIZES,
    holdout: float | None = None,
    cache_root: Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    before_embedding: Callable[[Sequence[Sample]], None] | None = None,
) -> ProbeFit:
    """Embed `dataset`, measure a head by nested lesion-disjoint folds, fit it on all of it, write the folder.

    Args:
        dataset: labelled images (HAM10000 manifests carry `lesion_id`; without it each image is its own lesion).
        embedder: the embedder, open.
        out_dir: the probe folder to write.
        embedder_name: its registry name, recorded so that `ProbeClassifier` can create it again.
        embedder_options: the options it was created with (no secrets: keys are read from the environment).
        seed: seed of folds, subsamples and the solver.
        outer_splits: outer folds for the out-of-fold figures and the learning curve.
        sizes: learning-curve training sizes (those at or above a fold's training part are skipped).
        holdout: about this share of the lesions is set aside as `holdout.csv` for an independent comparison
            (one of `round(1 / holdout)` lesion-disjoint, class-stratified folds).
        cache_root: embedding cache folder (default: derm-cloud's cache).
        overwrite: replace `out_dir` when it exists.
        progress: called with one line of progress text at a time.
        before_embedding: called with the images to embed (holdout set aside) before the cache is read: a batch
            job fills the cache here (`derm_cloud.probe.batch_embed`), so only what it missed is embedded online.

    Raises:
        ConfigError: unlabelled images, too few lesions or classes, `out_dir` exists without `overwrite`.
    """
    say = progress or (lambda line: None)
    out = Path(out_dir).expanduser()
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    samples = _labelled(dataset)
    held: list[Sample] = []
    if holdout:
        samples, held = _split_holdout(samples, holdout, seed)
        say(f"held out {len(held)} images ({len({s.lesion_id or s.image_id for s in held})} lesions)")
    if before_embedding is not None:
        before_embedding(samples)
    cache = EmbeddingCache.for_embedder(embedder, cache_root)
    try:
        x, digests, embedded = cache.embed_all(
            embedder,
            [s.read_bytes for s in samples],
            progress=lambda done, total: say(f"embedded {done}/{total} images not cached yet"),
        )
    finally:
        cache.close()
    y = np.asarray([s.label for s in samples])
    groups = [s.lesion_id or s.image_id for s in samples]
    say(f"{len(samples)} images embedded ({embedded} now, the rest from the cache {cache.path})")
    full = cross_validate(x, y, groups, outer_splits=outer_splits, seed=seed)
    oof = figures(full[0], y, groups) | {"folds": outer_splits, "mean_training_images": round(full[1], 1)}
    say(f"out-of-fold balanced accuracy {oof['balanced_accuracy']} {oof['balanced_accuracy_ci']}")
    curve = learning_curve(x, y, groups, sizes=sizes, outer_splits=outer_splits, seed=seed, full=full[:2])
    say("learning curve: " + ", ".join(f"{p['n']:.0f}: {p['balanced_accuracy']}" for p in curve))
    head, chosen = fit_head(x, y, groups, seed=seed)
    data_hash = hashlib.sha256(
        "\n".join(sorted(f"{d}\t{label}" for d, label in zip(digests, y.tolist(), strict=True))).encode()
    ).hexdigest()
    info = embedder.describe()
    spec = _spec(dataset, embedder, info.model_facts, embedder_name, embedder_options, data_hash, samples)
    # No key is ever written; an emulator's address dies with it: the endpoint's identity is kept, not its port.
    spec["embedder"]["options"] = recordable_options(spec["embedder"]["options"])
    if info.emulated:
        spec["embedder"]["emulated"] = True
    spec |= {"out_of_fold": oof, "learning_curve": curve}
    spec["head"] |= {k: v for k, v in chosen.items() if k != "export_max_abs_diff"}
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    head.save(staging / "head.npz")
    holdout_path = None
    if held:
        _write_manifest(held, staging / "holdout.csv")
        share = round(len(held) / (len(held) + len(samples)), 3)  # one of round(1/holdout) folds: near, not equal
        spec["data"]["holdout"] = {"file": "holdout.csv", "images": len(held), "asked": holdout, "share": share}
    (staging / "probe.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    staging.replace(out)
    if held:
        holdout_path = out / "holdout.csv"
    return ProbeFit(out, spec, embedded, holdout_path)


def _spec(
    dataset: Dataset,
    embedder: Embedder,
    embedder_facts: Mapping[str, Any],
    name: str,
    options: Mapping[str, Any] | None,
    data_hash: str,
    samples: Sequence[Sample],
) -> dict[str, Any]:
    import sklearn

    from derm_cloud.taxonomy import CLASS_CODES

    counts = Counter(str(s.label) for s in samples)
    inner_training = embedder_facts.get("training_data")
    return {
        "format": PROBE_FORMAT,
        "model_id": f"probe-{embedder.model_id}-{data_hash[:8]}",
        "embedder": {
            "name": name,
            "options": dict(options or {}),
            "model_id": embedder.model_id,
            "dimension": embedder.dimension,
        },
        "labels": list(CLASS_CODES),
        "head": {
            "file": "head.npz",
            "kind": "logistic regression, class-weighted, standardised, temperature-calibrated",
            "trained_with": f"scikit-learn {sklearn.__version__}",
        },
        "data": {
            "source": dataset.name,
            "sha256": data_hash,
            "images": len(samples),
            "lesions": len({s.lesion_id or s.image_id for s in samples}),
            "class_counts": {code: counts.get(code, 0) for code in CLASS_CODES},
        },
        "facts": {
            "training_data": f"head: {dataset.name} ({len(samples)} images)"
            + (f"; embedder: {inner_training}" if inner_training else ""),
            "intended_use": "Research comparison of skin-lesion classifiers (triage support, never a diagnosis; a "
            "clinician reviews every result).",
        },
    }
